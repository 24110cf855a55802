"""Bad flag values for IntegrationWrapperAddingLog.py and IntegrationWrapperRunController.py, as real
processes against the sandbox (SPEC §6-§8): exit 2, a message naming the flag, the usage line, no
traceback, and nothing sent to OneVizion. Then the platform refusing them: exit 3, no password.
"""

from __future__ import annotations

import pytest

import sandbox as sandbox_pkg
from tests.conftest import write_passwords

ADD = "IntegrationWrapperAddingLog.py"
CONTROL = "IntegrationWrapperRunController.py"


@pytest.mark.parametrize("script, args, parts", [
    (ADD, ["-i", "INT-1", "-w", "7", "-m", "hello"], ["argument -w/--message-type", "invalid message type '7'"]),
    (ADD, ["-i", "INT-1", "-w", "debug", "-m", "hello"], ["argument -w/--message-type", "'debug'"]),
    (ADD, ["-i", "INT-1", "-w", "0"], ["the following arguments are required: -m/--message"]),
    (ADD, ["-i", "INT-1", "-w", "0", "-m", ""], ["argument -m/--message: must not be empty"]),
    (ADD, ["-i", "INT-1", "-w", "0", "-m", "x", "-f", "/no/such/report.csv"],
     ["argument -f/--file: no such file: '/no/such/report.csv'"]),
    (ADD, ["-i", "INT-1", "-w", "0", "-m", "x", "-f", "/tmp"], ["argument -f/--file: not a regular file"]),
    (ADD, ["-i", "INT-1", "-w", "0", "-m", "x", "-f", "/dev/null"], ["argument -f/--file: not a regular file"]),
    (ADD, ["-w", "0", "-m", "x"], ["the following arguments are required: -i/--integration-id"]),
    (ADD, ["-i", "INT-1", "-w", "0", "-m", "x", "-r", " "], ["argument -r/--run-id: must not be empty"]),
    (ADD, ["-i", "INT-1", "-w", "0", "-m", "x", "--mesage", "y"], ["unrecognized arguments: --mesage"]),
    (CONTROL, ["-i", "INT-1", "-t", "restart"], ["argument -t/--action: invalid choice: 'restart'"]),
    (CONTROL, ["-i", "INT-1", "-t", "stop", "-e", "2"], ["argument -e/--errors: invalid choice: 2"]),
    (CONTROL, ["-i", "INT-1", "-t", "stop", "-e", "yes"], ["argument -e/--errors: invalid int value: 'yes'"]),
    (CONTROL, ["-i", "INT-1"], ["the following arguments are required: -t/--action"]),
    (CONTROL, ["-i", "INT-1", "-t", "start", "-e", "1"], ["argument -e/--errors: not allowed with -t start"]),
    (CONTROL, ["-i", "INT-1", "-t", "stop", "--force"], ["argument --force: with -t stop only together with -r/--run-id"]),
    (CONTROL, ["-t", "start"], ["the following arguments are required: -i/--integration-id"]),
])
def test_a_bad_flag_exits_2_naming_it_and_sends_nothing(hub, script, args, parts):
    done = hub.script(script, *args, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("usage: %s" % script), done.stderr
    for part in parts:
        assert part in done.stderr, (part, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert hub.sandbox.stats()["total"] == 0


@pytest.mark.parametrize("script, args", [(ADD, ["-p"]), (CONTROL, ["-p"]), (ADD, []), (CONTROL, [])])
def test_a_missing_or_empty_passwords_flag_exits_2(hub, script, args):
    done = hub.script(script, *args, "-i", "INT-1", "-w", "0", "-m", "x", "-t", "start", with_common=False)
    assert done.returncode == 2 and "-p/--passwords" in done.stderr, done.stderr
    assert hub.sandbox.stats()["total"] == 0


@pytest.mark.parametrize("script, args", [
    (ADD, ["-i", "INT-1", "-w", "0", "-m", "x"]),
    (CONTROL, ["-i", "INT-1", "-t", "start"]),
    (CONTROL, ["-i", "INT-1", "-t", "stop"]),
])
def test_a_missing_passwords_file_exits_2_naming_it(hub, tmp_path, script, args):
    hub.passwords = str(tmp_path / "nowhere" / "Passwords.json")
    done = hub.script(script, *args, timeout=30)
    assert done.returncode == 2, done.stderr
    assert hub.passwords in done.stderr and "Traceback" not in done.stderr
    assert hub.sandbox.stats()["total"] == 0


@pytest.mark.parametrize("script, args", [
    (ADD, ["-i", "INT-1", "-w", "0", "-m", "x"]),
    (CONTROL, ["-i", "INT-1", "-t", "start"]),
    (CONTROL, ["-i", "INT-1", "-t", "stop"]),
])
def test_a_wrong_password_exits_3_without_showing_it(hub, tmp_path, script, args):
    wrong = "Wr0ng-Pa55word-for-helpers"
    folder = tmp_path / "wrong"
    folder.mkdir()
    hub.passwords = write_passwords(folder, hub.sandbox.url, Password=wrong)
    done = hub.script(script, *args, timeout=30)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "refused the credentials in Passwords.json (401)" in done.stderr
    for text in (done.stdout, done.stderr, hub.hub_log()):
        assert wrong not in text and sandbox_pkg.PASSWORD not in text and "Traceback" not in text
    assert hub.sandbox.stats()["create"] == 0 and not hub.runs()
