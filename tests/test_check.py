"""IntegrationWrapper.py --check against the sandbox over real HTTP: for every check, a sandbox (or a
Schema.json, Passwords.json, Integration.json) where it passes and one where it fails with the fix the
README documents; an unreachable sandbox, a self-signed certificate, a redirect, an HTML page, a 403;
and that --check sends nothing but GETs and leaves the journal alone.

Most cases run the wrapper's main() in-process (the sandbox is real, the output is stdout); the
root script runs as a real process where the terminal, the encoding or a traceback matter.
"""

from __future__ import annotations

import io
import json
import os
import pty
import sqlite3
import subprocess
import sys

import pytest
import requests

import sandbox as sandbox_pkg
from hub import check
from sandbox.server import start_in_thread
from tests.conftest import REPO_ROOT, write_passwords
from tests.test_bad_platform import free_port, self_signed, tls_sandbox  # noqa: F401 - fixtures

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)
OK, WARN, FAIL, SKIP = check.OK, check.WARN, check.FAIL, check.SKIP
NEVER = ["Traceback", "internal error", sandbox_pkg.PASSWORD, sandbox_pkg.SECRET_KEY]


# ---------------------------------------------------------------- helpers

@pytest.fixture
def sandboxes():
    """start(**schema settings) -> a sandbox (sandbox.variants keywords); all stopped afterwards."""
    started = []

    def start(**settings):
        handle = start_in_thread(db=":memory:", port=0, **settings)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


class Result:
    def __init__(self, code: int, out: str):
        self.code, self.out = code, out
        self.lines = out.splitlines()

    def marked(self, mark: str) -> list:
        return [line for line in self.lines if line.startswith(mark + " ")]

    def has(self, line: str) -> bool:
        return line in self.lines

    def find(self, mark: str, *parts: str) -> str:
        """The one line with this mark holding every part."""
        found = [line for line in self.marked(mark) if all(p in line for p in parts)]
        assert len(found) == 1, f"no single {mark} line with {parts} in:\n{self.out}"
        return found[0]


@pytest.fixture
def run_check(tmp_path, capsys, monkeypatch):
    """run_check(url, *flags, schema=None, entries=None, mode=None, **Passwords.json keys) -> Result:
    --check in-process against `url` (mode: of Passwords.json, else 0600)."""
    monkeypatch.delenv("HUB_LOG_DIR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)

    def run(url, *flags, schema=None, entries=None, mode=None, **passwords):
        from hub.wrapper import main
        path = write_passwords(tmp_path, url, **passwords)
        if mode is not None:
            os.chmod(path, mode)
        args = ["-p", path, "--log-dir", str(tmp_path / "log"), "--check"]
        if schema is not None:
            args += ["-s", _write(tmp_path / "Schema.json", schema)]
        if entries is not None:
            args += ["-i", _write(tmp_path / "Integration.json", entries)]
        capsys.readouterr()
        code = main(args + list(flags))
        captured = capsys.readouterr()
        for never in NEVER:
            assert never not in captured.out + captured.err
        return Result(code, captured.out)

    return run


def _write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def entry(name="Example Daily Import", command="sh -c true", **keys) -> dict:
    return dict({"IntegrationName": name, "ExecutablePath": command}, **keys)


def program(tmp_path, name="job.sh", text="#!/bin/sh\necho hi\n", mode=0o755) -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def add_integration(sandbox, name, enabled=1, read_stdout=1) -> str:
    answer = requests.post(f"{sandbox.url}/api/v3/trackor_types/Integration/trackors", auth=AUTH,
                           json={"fields": {"INT_NAME": name, "INT_ENABLED": enabled,
                                            "INT_READ_FROM_STDOUT": read_stdout}})
    assert answer.status_code == 201, answer.text
    return answer.json()["TRACKOR_KEY"]


# ---------------------------------------------------------------- a healthy sandbox, as a real process

def test_a_healthy_sandbox_passes_every_check_plainly_without_a_terminal(sandboxes, tmp_path):
    sandbox = sandboxes()
    passwords = write_passwords(tmp_path, sandbox.url)
    entries = _write(tmp_path / "Integration.json", [entry(command="python3 examples/daily_import.py --rows 5",
                                                           ExecutableWorkingDir=REPO_ROOT)])
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"), "-p", passwords,
                           "--check", "-i", entries, "--log-dir", str(tmp_path / "log")],
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert "\033[" not in done.stdout   # no terminal: no colour
    lines = done.stdout.splitlines()
    assert lines[-1] == "all checks passed"
    assert all(line.startswith(OK + " ") for line in lines[:-1]), done.stdout
    expected = [
        f"{OK} OneVizion at 127.0.0.1:{sandbox.port} answers (plain http, on this machine)",
        f"{OK} OneVizion version {sandbox_pkg.VERSION}",
        f"{OK} credentials accepted (UserName {sandbox_pkg.USER_NAME})",
        f"{OK} trackor type Integration exists (integration.trackor_type)",
        f"{OK} trackor type IntegrationRun exists (run.trackor_type)",
        f"{OK} trackor type IntegrationLog exists (log.trackor_type)",
        f"{OK} IntegrationRun is a child of Integration",
        f"{OK} IntegrationLog is a child of IntegrationRun",
        f"{OK} IntegrationRun takes the keys the hub gives (no key generation)",
        f"{OK} IntegrationLog takes the keys the hub gives (no key generation)",
        f"{OK} Integration fields: INT_NAME (Text), INT_CONTROL_PROCESS (Text), INT_ENABLED (Checkbox), "
        f"INT_LAST_RUN (Date/Time), INT_READ_FROM_STDOUT (Checkbox)",
        f"{OK} IntegrationRun fields: IR_STATUS (Drop-Down), IR_START (Date/Time), IR_FINISH (Date/Time), "
        f"IR_FILE (Electronic File)",
        f"{OK} IntegrationLog fields: IL_DATE_TIME (Date/Time), IL_MESSAGE_TYPE (Drop-Down), IL_MESSAGE (Text), "
        f"IL_DESCRIPTION (Memo), IL_FILE (Electronic File)",
        f"{OK} IntegrationRun: no mandatory field that the hub leaves empty",
        f"{OK} IntegrationLog: no mandatory field that the hub leaves empty",
        f"{OK} IR_STATUS has the values Running, Executed without Warnings, Executed with Warnings",
        f"{OK} IL_MESSAGE_TYPE has the values Info, Warning, Error",
        f"{OK} date-times will be written in PrimaryTimezone America/New_York (no Timezone in Passwords.json)",
        f"{OK} Example Daily Import: Integration INT-1 found by its name",
        f"{OK} Example Daily Import: Enabled",
        f"{OK} Example Daily Import: Read From STDOUT is checked: its stdout lines become Log records",
        f"{OK} Example Daily Import: working directory {REPO_ROOT}",
    ]
    for line in expected:
        assert line in lines, f"{line!r} not in:\n{done.stdout}"
    # in the order an administrator fixes things
    assert [lines.index(line) for line in expected] == sorted(lines.index(line) for line in expected)


def test_on_a_terminal_the_marks_are_coloured(sandboxes, tmp_path):
    sandbox = sandboxes()
    passwords = write_passwords(tmp_path, sandbox.url, Password="wrong")
    leader, follower = pty.openpty()
    env = dict(os.environ, TERM="xterm")
    env.pop("NO_COLOR", None)
    try:
        done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"), "-p", passwords,
                               "--check", "--log-dir", str(tmp_path / "log")], stdout=follower,
                              stderr=subprocess.PIPE, timeout=60, env=env)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:   # EIO: the terminal's other end is closed and read empty
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    text = out.decode("utf-8")
    assert done.returncode == 3
    assert f"\033[32m{OK}\033[0m OneVizion version" in text
    assert f"\033[31m{FAIL}\033[0m OneVizion refused the credentials" in text


def test_a_stream_that_cannot_show_the_marks_gets_plain_ascii(sandboxes, tmp_path):
    sandbox = sandboxes(autogen_keys=["IntegrationRun"])
    passwords = write_passwords(tmp_path, sandbox.url)
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"), "-p", passwords,
                           "--check", "--log-dir", str(tmp_path / "log")], capture_output=True, timeout=60,
                          env=dict(os.environ, PYTHONIOENCODING="ascii"))
    out = done.stdout.decode("ascii")
    assert done.returncode == 0, out + done.stderr.decode()
    assert "ok OneVizion version" in out
    assert "! IntegrationRun generates its own keys" in out and " -- turn off" in out


def test_report_lines_and_summary():
    stream = io.StringIO()
    report = check.Report(stream, colour=False)
    report.ok("fine")
    report.warn("odd", "look")
    report.fail("bad", "fix it", code=3)
    report.fail("worse", "fix that", code=2)
    report.skip("not checked: x")
    report.summary()
    assert stream.getvalue().splitlines() == [f"{OK} fine", f"{WARN} odd {check.DASH} look",
                                              f"{FAIL} bad {check.DASH} fix it", f"{FAIL} worse {check.DASH} fix that",
                                              f"{SKIP} not checked: x", "2 to fix, 1 warning (exit 3)"]
    assert report.code == 3


# ---------------------------------------------------------------- reachable and TLS

def test_a_stopped_sandbox_is_unreachable_exit_3_and_nothing_else_is_checked(sandboxes, run_check):
    sandbox = sandboxes()
    url = sandbox.url
    sandbox.stop()
    result = run_check(url, entries=[entry()])
    assert result.code == 3
    assert result.has(f"{FAIL} cannot reach OneVizion at 127.0.0.1:{sandbox.port}: connection refused "
                      f"{check.DASH} check URL in Passwords.json, DNS, the firewall or proxy, and that OneVizion is up")
    result.find(SKIP, "not checked: the trackor types", "the Timezone", "the entries of", "OneVizion must answer first")
    assert result.lines[-1] == "1 to fix, 0 warnings (exit 3)"


def test_an_unknown_host_is_unreachable(run_check):
    result = run_check("https://no-such-host.invalid")
    assert result.code == 3
    result.find(FAIL, "cannot reach OneVizion at no-such-host.invalid", "check URL")


def test_a_self_signed_certificate_fails_with_the_cabundle_hint(run_check, tls_sandbox):  # noqa: F811
    url, server = tls_sandbox
    result = run_check(url)
    assert result.code == 3
    port = url.rsplit(":", 1)[1]
    assert result.has(f"{FAIL} TLS verification failed for 127.0.0.1:{port} {check.DASH} give the installation's "
                      f"CA in Passwords.json CABundle, or set VerifyTLS false if you trust the network")
    assert server.stats.snapshot()["total"] == 0


def test_the_certificate_verified_with_cabundle_passes_every_check(run_check, tls_sandbox, self_signed):  # noqa: F811
    url, _ = tls_sandbox
    result = run_check(url, CABundle=self_signed[0])
    assert result.code == 0, result.out
    result.find(OK, f"answers over TLS, certificate verified with CABundle {self_signed[0]}")
    assert result.lines[-1] == "all checks passed"


def test_verify_tls_false_is_a_warning(run_check, tls_sandbox):  # noqa: F811
    url, _ = tls_sandbox
    result = run_check(url, VerifyTLS=False)
    assert result.code == 0
    assert result.find(WARN, "over TLS, but its certificate is not verified (VerifyTLS false)").endswith(
        "give the installation's CA in Passwords.json CABundle instead")


def test_plain_http_to_another_machine_is_a_warning():
    # Decided by the URL alone, and no address of this machine that is not loopback can be counted on in a
    # test: the line is checked on the Report, with the connection's two attributes it reads.
    stream = io.StringIO()
    report = check.Report(stream, colour=False)
    ctx = type("Ctx", (), {"api": type("Api", (), {"scheme": "http", "host": "onevizion.example.com",
                                                   "_hostname": "onevizion.example.com"}),
                           "installation": type("Installation", (), {"verify": True})})
    check._reachable(ctx, report)
    assert stream.getvalue() == (f"{WARN} OneVizion at onevizion.example.com answers over plain http: the "
                                 f"credentials travel unencrypted {check.DASH} use https:// in URL\n")
    assert report.code == 0 and report.warned == 1


# ---------------------------------------------------------------- the server version (is it OneVizion?)

def test_an_html_page_instead_of_server_info_is_not_onevizion(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/v3/server_info$", content_type="text/html", body="<html>Welcome to the portal</html>")
    result = run_check(sandbox.url)
    assert result.code == 3
    result.find(OK, "answers (plain http")   # the connection itself worked
    line = result.find(FAIL, "GET /api/v3/server_info answered 200 with text/html, not JSON: <html>Welcome")
    assert line.endswith("put the installation's own address in Passwords.json URL (https://host, no path): a "
                         "portal, proxy or another server answers there")
    result.find(SKIP, "not checked")


def test_a_redirect_to_a_login_portal_names_where(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(status=302, headers={"Location": "https://sso.example.com/login"})
    result = run_check(sandbox.url)
    assert result.code == 3
    result.find(FAIL, "GET /api/v3/server_info was redirected (302) to https://sso.example.com/login",
                "a portal, proxy or another server answers there")


def test_a_404_for_server_info_is_not_onevizion(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/v3/server_info$", status=404, body="Not Found")
    result = run_check(sandbox.url)
    assert result.code == 3
    result.find(FAIL, f"{sandbox.url} does not answer like a OneVizion installation (404: Not Found to "
                      f"GET /api/v3/server_info)", "(https://host, no path)")


def test_a_503_says_try_again_later(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/v3/server_info$", status=503, body="Service Unavailable")
    result = run_check(sandbox.url)
    assert result.code == 3
    result.find(FAIL, "OneVizion answered 503 to GET /api/v3/server_info: Service Unavailable", "try again later")


def test_server_info_without_a_version_is_a_warning(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/v3/server_info$", json={"build": 7})
    result = run_check(sandbox.url)
    assert result.code == 0
    result.find(WARN, "server_info answers without a version", "make sure URL is the installation's address")


# ---------------------------------------------------------------- credentials

def test_wrong_credentials_show_the_servers_reason_exit_3(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, Password="not-the-password")
    assert result.code == 3
    assert result.has(f"{FAIL} OneVizion refused the credentials (UserName {sandbox_pkg.USER_NAME}): Authorization "
                      f"failed: wrong user name or password {check.DASH} check UserName and Password in "
                      f"Passwords.json, and that the user is active, not locked, its password current")
    result.find(SKIP, "not checked: the trackor types")
    assert "not-the-password" not in result.out


def test_a_locked_user_gets_the_reason_from_the_401_body(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/authorize$", status=401, body="User is temporarily locked")
    result = run_check(sandbox.url)
    assert result.code == 3
    result.find(FAIL, "OneVizion refused the credentials (UserName hub.admin): User is temporarily locked")


def test_a_403_from_authorize_is_refused_credentials(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/authorize$", status=403, body="API access is not allowed for this user")
    result = run_check(sandbox.url)
    assert result.code == 3
    result.find(FAIL, "OneVizion refused UserName hub.admin the API (403: API access is not allowed for this user)",
                "give the user's role access to the REST API")


def test_a_token_is_accepted_and_named_without_its_value(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, UserName=None, Password=None, AccessKey=sandbox_pkg.ACCESS_KEY,
                       SecretKey=sandbox_pkg.SECRET_KEY)
    assert result.code == 0
    assert result.has(f"{OK} credentials accepted (the AccessKey/SecretKey token)")
    assert sandbox_pkg.ACCESS_KEY not in result.out


def test_a_wrong_token_says_to_check_the_keys(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, UserName=None, Password=None, AccessKey=sandbox_pkg.ACCESS_KEY,
                       SecretKey="x" * 70)
    assert result.code == 3
    result.find(FAIL, "refused the credentials (the AccessKey/SecretKey token): Authorization failed: wrong access "
                      "key or secret key", "check AccessKey and SecretKey in Passwords.json")


# ---------------------------------------------------------------- trackor types

def test_a_label_instead_of_a_type_name_is_named(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, schema={"run": {"trackor_type": "Integration Run"}})
    assert result.code == 2
    assert result.has(f"{FAIL} 'Integration Run' is the label of IntegrationRun: use the name {check.DASH} set "
                      f"run.trackor_type to \"IntegrationRun\" in Schema.json")
    result.find(SKIP, "not checked: whether run.trackor_type is a child of integration.trackor_type")
    result.find(SKIP, "not checked: the fields of run.trackor_type (no such type)")


def test_an_unknown_type_gets_a_did_you_mean(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, schema={"log": {"trackor_type": "IntegrationLogs"}})
    assert result.code == 2
    result.find(FAIL, "no trackor type 'IntegrationLogs' (log.trackor_type) that this user can read; did you mean "
                      "IntegrationLog?", "or set log.trackor_type in Schema.json to the type you use")


def test_a_type_name_in_another_case_is_found_and_spelled(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, schema={"run": {"trackor_type": "integrationrun"}})
    assert result.code == 0, result.out
    assert result.has(f"{OK} trackor type IntegrationRun exists (run.trackor_type; Schema.json's 'integrationrun' "
                      f"is spelled IntegrationRun)")


def test_a_schema_the_user_may_not_read_is_a_problem_but_the_entries_are_still_checked(sandboxes, run_check,
                                                                                          tmp_path):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/v3/schema/", status=403, body="Access denied")
    result = run_check(sandbox.url, entries=[entry()])
    assert result.code == 2
    result.find(FAIL, "this user may not read the trackor types (403 to GET /api/v3/schema/trackor_types: Access "
                      "denied)", "run --check as a user who may")
    result.find(OK, "Example Daily Import: Integration INT-1 found by its name")


# ---------------------------------------------------------------- relations

def test_run_not_a_child_of_integration_and_log_not_a_child_of_run(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_trackor_type("OtherRun", None, {"IR_STATUS": {"type": "dropdown", "values": [
        "Running", "Executed without Warnings", "Executed with Warnings"]}, "IR_START": "datetime",
        "IR_FINISH": "datetime", "IR_FILE": "efile"})
    result = run_check(sandbox.url, schema={"run": {"trackor_type": "OtherRun"}})
    assert result.code == 2
    assert result.has(f"{FAIL} OtherRun is not a child of Integration (its parents: none) {check.DASH} make OtherRun "
                      f"a child of Integration in OneVizion's trackor tree, or set run.trackor_type in Schema.json "
                      f"to the child type you use (Integration's children: IntegrationRun)")
    result.find(FAIL, "IntegrationLog is not a child of OtherRun (its parents: IntegrationRun)")


# ---------------------------------------------------------------- key generation (a warning)

def test_generated_keys_are_a_warning_that_keeps_exit_0(sandboxes, run_check):
    sandbox = sandboxes(autogen_keys={"IntegrationRun": "RUN-"})
    result = run_check(sandbox.url)
    assert result.code == 0
    assert result.has(f"{WARN} IntegrationRun generates its own keys (RUN-{{TRACKOR_ID:06}}): the hub's keys may be "
                      f"replaced, and a create retried after a lost answer can make a second run {check.DASH} turn "
                      f"off Trackor Key Auto-Generation for IntegrationRun in OneVizion")
    assert result.has(f"{OK} IntegrationLog takes the keys the hub gives (no key generation)")
    assert result.lines[-1] == "all checks passed, 1 warning"


# ---------------------------------------------------------------- fields

def test_a_missing_field_is_named_with_its_mapping_key(sandboxes, run_check):
    sandbox = sandboxes(drop_fields=["IL_FILE"])
    result = run_check(sandbox.url)
    assert result.code == 2
    assert result.has(f"{FAIL} IntegrationLog has no field IL_FILE (log.file) {check.DASH} create it in OneVizion "
                      f"(Electronic File), or set log.file in Schema.json to the field you use")
    assert result.has(f"{OK} IntegrationLog fields: IL_DATE_TIME (Date/Time), IL_MESSAGE_TYPE (Drop-Down), "
                      f"IL_MESSAGE (Text), IL_DESCRIPTION (Memo)")


def test_a_field_of_the_wrong_type(sandboxes, run_check):
    sandbox = sandboxes(field_types={"IR_START": "Date", "IL_MESSAGE": "Number"})
    result = run_check(sandbox.url)
    assert result.code == 2
    assert result.has(f"{FAIL} IntegrationRun.IR_START (run.start) is a Date field; expected Date/Time {check.DASH} "
                      f"set run.start in Schema.json to a Date/Time field of IntegrationRun, or change the field's "
                      f"type in OneVizion")
    result.find(FAIL, "IntegrationLog.IL_MESSAGE (log.message) is a Number field; expected Text or Memo")


def test_message_may_be_memo_and_description_text(sandboxes, run_check):
    sandbox = sandboxes(field_types={"IL_MESSAGE": "Memo", "IL_DESCRIPTION": "Text"})
    result = run_check(sandbox.url)
    assert result.code == 0, result.out
    result.find(OK, "IL_MESSAGE (Memo)", "IL_DESCRIPTION (Text)")


def test_a_lower_case_field_name_matches_and_the_canonical_spelling_is_said(sandboxes, run_check):
    sandbox = sandboxes()
    add_integration(sandbox, "Off Duty", enabled=0)
    result = run_check(sandbox.url, schema={"integration": {"enabled": "int_enabled"}},
                       entries=[entry(), entry("Off Duty")])
    assert result.code == 0, result.out
    result.find(OK, "Integration fields:", "INT_ENABLED (Checkbox, Schema.json's int_enabled)")
    # the answer's INT_ENABLED is read under Schema.json's spelling: enabled and disabled told apart
    assert result.has(f"{OK} Example Daily Import: Enabled")
    result.find(WARN, "Off Duty: Enabled is unchecked")


def test_a_field_label_instead_of_its_name_and_a_near_miss(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, schema={"log": {"message": "Message", "file": "IL_FILES"}})
    assert result.code == 2
    assert result.has(f"{FAIL} 'Message' (log.message) is the label of IntegrationLog.IL_MESSAGE: use the name "
                      f"{check.DASH} set log.message to \"IL_MESSAGE\" in Schema.json")
    result.find(FAIL, "IntegrationLog has no field IL_FILES (log.file); did you mean IL_FILE?")


def test_strange_schema_answers_never_give_a_traceback(sandboxes, tmp_path):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/v3/schema/trackor_types$", json=[
        {"name": "Integration", "relations": "none"}, {"name": "IntegrationRun", "relations": {"parents": [7]}},
        {"name": "IntegrationLog", "relations": {"parents": [{"name": "IntegrationRun"}]},
         "autogen_trackor_key": None}, {"label": 5}])
    sandbox.add_rule(path="^/api/v3/schema/fields$", json=[{"name": "INT_NAME"}, {"type": None},
                                                           {"name": "IR_STATUS", "type": "Drop-Down",
                                                            "dropdown_values": [None, {"label": "x"}],
                                                            "field_trackor_type": {"name": "IntegrationRun"}}])
    passwords = write_passwords(tmp_path, sandbox.url)
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"), "-p", passwords,
                           "--check", "--log-dir", str(tmp_path / "log")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == "" and "Traceback" not in done.stdout
    assert "IntegrationRun is not a child of Integration (its parents: 7)" in done.stdout
    assert "IntegrationLog is a child of IntegrationRun" in done.stdout
    assert "'Running' (run.running) is not a value of IR_STATUS (its values: none)" in done.stdout


def test_a_schema_fields_answer_that_is_not_a_list_is_one_clear_line(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/v3/schema/fields$", json={"error": "nope"})
    result = run_check(sandbox.url)
    assert result.code == 3
    result.find(FAIL, "GET /api/v3/schema/fields answered 200 with something other than a list")
    result.find(SKIP, "not checked: fields, mandatory fields, drop-down values (the fields could not be read)")


# ---------------------------------------------------------------- mandatory fields

def test_a_mandatory_field_the_hub_does_not_fill(sandboxes, run_check):
    sandbox = sandboxes(mandatory_fields=["IntegrationRun.IR_APPROVER", "IR_FINISH", "IL_MESSAGE_TYPE"])
    result = run_check(sandbox.url)
    assert result.code == 2
    assert result.has(f"{FAIL} IntegrationRun has mandatory fields the hub does not fill when it creates a run: "
                      f"IR_FINISH (run.finish, set later), IR_APPROVER (Approver) {check.DASH} make them optional "
                      f"for IntegrationRun in OneVizion: every create would be refused")
    # IL_MESSAGE_TYPE is mandatory, and the hub fills it
    assert result.has(f"{OK} IntegrationLog: no mandatory field that the hub leaves empty")


# ---------------------------------------------------------------- drop-down values

def test_a_missing_drop_down_value(sandboxes, run_check):
    sandbox = sandboxes(drop_values={"IR_STATUS": ["Executed without Warnings"], "IL_MESSAGE_TYPE": "Error"})
    result = run_check(sandbox.url)
    assert result.code == 2
    assert result.has(f"{FAIL} 'Executed without Warnings' (run.ok) is not a value of IR_STATUS (its values: Running, "
                      f"Executed with Warnings) {check.DASH} add it to IR_STATUS in OneVizion, or set run.ok in "
                      f"Schema.json to the value meant")
    result.find(FAIL, "'Error' (log.error) is not a value of IL_MESSAGE_TYPE (its values: Info, Warning)")


def test_a_value_that_differs_in_case_is_a_near_miss(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, schema={"run": {"ok": "Executed Without Warnings"}})
    assert result.code == 2
    assert result.has(f"{FAIL} 'Executed Without Warnings' (run.ok) is not a value of IR_STATUS; did you mean "
                      f"'Executed without Warnings'? {check.DASH} set run.ok to \"Executed without Warnings\" in "
                      f"Schema.json")


def test_values_of_a_mapping_that_names_others_pass(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_trackor_type("MyLog", "IntegrationRun", {
        "ML_WHEN": "datetime", "ML_KIND": {"type": "dropdown", "values": ["Note", "Caution", "Failure"]},
        "ML_TEXT": "text", "ML_BODY": "memo", "ML_FILE": "efile"})
    schema = {"log": {"trackor_type": "MyLog", "date_time": "ML_WHEN", "message_type": "ML_KIND",
                      "message": "ML_TEXT", "description": "ML_BODY", "file": "ML_FILE", "info": "Note",
                      "warning": "Caution", "error": "Failure"}}
    result = run_check(sandbox.url, schema=schema)
    assert result.code == 0, result.out
    assert result.has(f"{OK} ML_KIND has the values Note, Caution, Failure")


# ---------------------------------------------------------------- Timezone

def test_no_timezone_means_primary_timezone(sandboxes, run_check):
    sandbox = sandboxes(timezone="Asia/Kolkata")
    result = run_check(sandbox.url)
    assert result.has(f"{OK} date-times will be written in PrimaryTimezone Asia/Kolkata (no Timezone in "
                      f"Passwords.json)")


def test_the_same_timezone_passes(sandboxes, run_check):
    sandbox = sandboxes(timezone="Europe/Berlin")
    result = run_check(sandbox.url, Timezone="Europe/Berlin")
    assert result.code == 0
    assert result.has(f"{OK} Timezone Europe/Berlin of Passwords.json is the installation's PrimaryTimezone")


def test_another_timezone_is_a_warning(sandboxes, run_check):
    sandbox = sandboxes(timezone="Europe/Berlin")
    result = run_check(sandbox.url, Timezone="America/Chicago")
    assert result.code == 0
    assert result.has(f"{WARN} date-times will be written in America/Chicago (Timezone of Passwords.json) while the "
                      f"installation reads them in Europe/Berlin (PrimaryTimezone) {check.DASH} remove Timezone from "
                      f"Passwords.json, or set it to \"Europe/Berlin\"")


def test_an_unreadable_primary_timezone_is_a_warning(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/v3/params/system/", status=403, body="Access denied")
    result = run_check(sandbox.url)
    assert result.code == 0
    result.find(WARN, "PrimaryTimezone could not be read (this user may not read PrimaryTimezone", "date-times will "
                      "be written in the machine's zone", "set Timezone in Passwords.json to the installation's zone")


# ---------------------------------------------------------------- Integration.json entries

def test_an_integration_not_found_gets_a_did_you_mean(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, entries=[entry("example daily import")])
    assert result.code == 2
    assert result.has(f"{FAIL} example daily import: no Integration named 'example daily import' in OneVizion "
                      f"(Integration.INT_NAME); did you mean 'Example Daily Import'? {check.DASH} create it, or "
                      f"make IntegrationName in Integration.json match its name exactly")


def test_two_integrations_with_one_name(sandboxes, run_check):
    sandbox = sandboxes()
    key = add_integration(sandbox, "Example Daily Import")
    result = run_check(sandbox.url, entries=[entry()])
    assert result.code == 2
    assert result.has(f"{FAIL} Example Daily Import: 2 Integrations are named 'Example Daily Import' (INT-1, {key}); "
                      f"the wrapper would use INT-1 {check.DASH} give each Integration its own name")


def test_a_failed_lookup_is_one_clear_line(sandboxes, run_check):
    sandbox = sandboxes()
    sandbox.add_rule(path="^/api/v3/trackor_types/Integration/trackors$", status=500,
                     body="Internal Server Error: NullPointerException")
    result = run_check(sandbox.url, entries=[entry()])
    assert result.code == 3
    result.find(FAIL, "OneVizion answered 500 to GET /api/v3/trackor_types/Integration/trackors: Internal Server "
                      "Error: NullPointerException", "try again later")
    result.find(OK, "Example Daily Import: program")   # the local checks go on


def test_a_bad_schema_json_is_exit_2_naming_the_key(sandboxes, tmp_path, capsys):
    from hub.wrapper import main
    sandbox = sandboxes()
    schema = _write(tmp_path / "Schema.json", {"run": {"stauts": "IR_STATUS"}})
    code = main(["-p", write_passwords(tmp_path, sandbox.url), "--check", "-s", schema, "--log-dir",
                 str(tmp_path / "log")])
    assert code == 2
    assert 'run: unknown key "stauts" (did you mean "status"?)' in capsys.readouterr().err
    assert sandbox.stats()["total"] == 0


def test_disabled_is_a_warning_and_read_from_stdout_is_information(sandboxes, run_check):
    sandbox = sandboxes()
    key = add_integration(sandbox, "Quiet One", enabled=0, read_stdout=0)
    result = run_check(sandbox.url, entries=[entry("Quiet One")])
    assert result.code == 0
    assert result.has(f"{WARN} Quiet One: Enabled is unchecked on {key}: the wrapper skips it {check.DASH} check "
                      f"Enabled (INT_ENABLED) on {key} in OneVizion when it should run")
    assert result.has(f"{OK} Quiet One: Read From STDOUT is unchecked: only its stderr lines become Log records "
                      f"(stdout is read for the files it names)")


def test_a_broken_integration_mapping_skips_the_lookups(sandboxes, run_check):
    sandbox = sandboxes(drop_fields=["INT_NAME"])
    result = run_check(sandbox.url, entries=[entry()])
    assert result.code == 2
    result.find(SKIP, "Example Daily Import: its Integration not looked up")
    result.find(OK, "Example Daily Import: program", "sh found and executable")


def test_programs_found_and_not(sandboxes, run_check, tmp_path, monkeypatch):
    sandbox = sandboxes()
    for name in ("A", "B", "C", "D", "E", "F", "G", "H"):
        add_integration(sandbox, name)
    good = program(tmp_path, "good.sh")
    plain = program(tmp_path, "plain.sh", mode=0o644)
    no_interpreter = program(tmp_path, "nointerp.sh", "#!/no/such/sh\necho\n")
    no_hashbang = program(tmp_path, "nohash.sh", "echo hi\n")
    env_missing = program(tmp_path, "envmissing.sh", "#!/usr/bin/env no-such-interpreter-x\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    result = run_check(sandbox.url, entries=[
        entry("A", "good.sh --flag"), entry("B", "no-such-program-x"), entry("C", plain), entry("D", str(tmp_path)),
        entry("E", no_interpreter), entry("F", no_hashbang), entry("G", "python3 missing.py", ExecutableWorkingDir=str(
            tmp_path)), entry("H", env_missing)])
    assert result.code == 2
    assert result.has(f"{OK} A: program {good} found and executable")
    assert result.has(f"{FAIL} B: no program 'no-such-program-x' on PATH ({tmp_path}:/usr/bin:/bin) {check.DASH} give "
                      f"its full path in ExecutablePath, or set PATH in the environment cron gives the wrapper")
    assert result.has(f"{FAIL} C: program {plain} is not executable {check.DASH} chmod +x {plain}, or start it "
                      f"through its interpreter")
    result.find(FAIL, f"D: program {tmp_path} is a directory")
    result.find(FAIL, f"E: the #! interpreter /no/such/sh of {no_interpreter} was not found", "fix its #! line")
    result.find(FAIL, f"F: {no_hashbang} is not a program (no #! line, not a binary)")
    result.find(FAIL, f"G: python3 is given the script missing.py, and there is no file {tmp_path}/missing.py")
    result.find(FAIL, f"H: the #! line of {env_missing} asks env for no-such-interpreter-x, which is not on PATH")


def test_a_relative_program_is_taken_from_the_working_directory_and_shell_means_sh(sandboxes, run_check, tmp_path):
    sandbox = sandboxes()
    add_integration(sandbox, "Rel")
    add_integration(sandbox, "Pipe")
    (tmp_path / "bin").mkdir()
    job = program(tmp_path / "bin", "job.sh")
    result = run_check(sandbox.url, entries=[entry("Rel", "bin/job.sh", ExecutableWorkingDir=str(tmp_path)),
                                             entry("Pipe", "no-such-x | gzip > /dev/null", Shell=True)])
    assert result.code == 0, result.out
    assert result.has(f"{OK} Rel: program {job} found and executable")
    assert result.has(f"{OK} Pipe: program /bin/sh found and executable (Shell: true; the command itself is "
                      f"/bin/sh's to run)")


def test_the_working_directory(sandboxes, run_check, tmp_path):
    sandbox = sandboxes()
    add_integration(sandbox, "Gone")
    result = run_check(sandbox.url, entries=[entry(ExecutableWorkingDir=str(tmp_path)),
                                             entry("Gone", ExecutableWorkingDir=str(tmp_path / "gone"))])
    assert result.code == 2
    assert result.has(f"{OK} Example Daily Import: working directory {tmp_path}")
    assert result.has(f"{FAIL} Gone: working directory {tmp_path / 'gone'} does not exist {check.DASH} create it, or "
                      f"fix ExecutableWorkingDir")


def test_variables_set_and_not(sandboxes, run_check, monkeypatch):
    sandbox = sandboxes()
    add_integration(sandbox, "Unset")
    add_integration(sandbox, "Shelled")
    add_integration(sandbox, "Literal")
    add_integration(sandbox, "Quotes")
    monkeypatch.setenv("CHECK_SINCE", "2026-01-01")
    monkeypatch.delenv("CHECK_MISSING_A", raising=False)
    monkeypatch.delenv("CHECK_MISSING_B", raising=False)
    result = run_check(sandbox.url, entries=[
        entry(command="sh -c 'echo $0' ${CHECK_SINCE} ${CHECK_TOKEN}", Environment={"CHECK_TOKEN": "t"}),
        entry("Unset", "sh -c true ${CHECK_MISSING_A} x${CHECK_MISSING_B}"),
        entry("Shelled", "echo $CHECK_MISSING_A", Shell=True),
        entry("Literal", Environment={"TOKEN": "${CHECK_SINCE}"}),
        entry("Quotes", "sh -c 'true")])
    assert result.code == 2
    assert result.has(f"{OK} Example Daily Import: variables set: CHECK_SINCE, CHECK_TOKEN")
    assert result.has(f"{FAIL} Unset: ExecutablePath uses ${{CHECK_MISSING_A}}, ${{CHECK_MISSING_B}}, not set in the "
                      f"environment {check.DASH} set them in the environment cron gives the wrapper (cron's is minimal), "
                      f"or in the entry's Environment")
    result.find(OK, "Unset: program", "sh found and executable")   # the program is still checked
    result.find(WARN, "Shelled: ${CHECK_MISSING_A} not set: /bin/sh will expand it to nothing")
    result.find(WARN, "Literal: Environment TOKEN holds ${…} as text: Environment values are passed as written, not "
                      "expanded")
    result.find(FAIL, "Quotes: ExecutablePath has unbalanced quotes or a trailing backslash",
                "fix ExecutablePath in Integration.json")


def test_upload_dirs(sandboxes, run_check, tmp_path):
    sandbox = sandboxes()
    for name in ("Missing", "None", "Everything"):
        add_integration(sandbox, name)
    (tmp_path / "out").mkdir()
    result = run_check(sandbox.url, entries=[
        entry(ExecutableWorkingDir=str(tmp_path), UploadDirs=["out", "/tmp"]),
        entry("Missing", ExecutableWorkingDir=str(tmp_path), UploadDirs=["exports"]),
        entry("None", UploadDirs=[]), entry("Everything", UploadDirs=["/"])])
    assert result.code == 2
    assert result.has(f"{OK} Example Daily Import: UploadDirs exist: out, /tmp")
    assert result.has(f"{FAIL} Missing: UploadDirs {tmp_path / 'exports'} is not a folder {check.DASH} create it, or "
                      f"fix UploadDirs")
    assert result.has(f"{OK} None: UploadDirs is empty: no printed file is uploaded")
    result.find(WARN, "Everything: UploadDirs includes /: any file the wrapper can read may be uploaded")


def test_a_malformed_integration_json_is_one_line_exit_2(sandboxes, run_check):
    sandbox = sandboxes()
    result = run_check(sandbox.url, entries=[{"IntegrationName": "X", "ExecutablePath": "true",
                                              "ExecutableWorkDir": "/tmp"}])
    assert result.code == 2
    result.find(FAIL, 'entry #1 ("X"): unknown key "ExecutableWorkDir" (did you mean "ExecutableWorkingDir"?)',
                "fix the named entry and key")


def test_passwords_json_readable_by_others_is_a_warning(sandboxes, run_check, tmp_path):
    sandbox = sandboxes()
    result = run_check(sandbox.url)
    assert result.has(f"{OK} {tmp_path / 'Passwords.json'} is readable only by its owner")
    result = run_check(sandbox.url, mode=0o644)
    assert result.code == 0
    assert result.has(f"{WARN} {tmp_path / 'Passwords.json'} is readable by others (mode 0644) {check.DASH} chmod "
                      f"600 it")


# ---------------------------------------------------------------- read-only

def test_check_sends_only_gets_and_leaves_the_journal_alone(sandboxes, tmp_path):
    sandbox = sandboxes(mandatory_fields=["IntegrationRun.IR_APPROVER"])
    env = dict(os.environ, HUB_DELIVERY_SECONDS="0.5", HUB_BACKOFF_BASE="0.02")
    log_dir = str(tmp_path / "log")
    passwords = write_passwords(tmp_path, sandbox.url)
    sandbox.set_faults(down_for_s=30)
    journaled = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapperAddingLog.py"), "-p",
                                passwords, "-i", "INT-1", "-w", "Info", "-m", "waits in the journal", "--log-dir",
                                log_dir], capture_output=True, text=True, timeout=60, env=env)
    assert journaled.returncode == 75, journaled.stderr
    sandbox.clear_faults()
    sandbox.reset_stats()
    journal = os.path.join(log_dir, "journal.sqlite3")
    before = _journal_rows(journal)
    assert before["loose"] == 1
    entries = _write(tmp_path / "Integration.json", [entry()])
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"), "-p", passwords,
                           "--check", "-i", entries, "--log-dir", log_dir], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 2, done.stdout + done.stderr   # the mandatory field
    stats = sandbox.stats()
    assert stats["total"] > 5
    assert {kind: stats[kind] for kind in ("create", "update", "delete", "upload")} == \
        {"create": 0, "update": 0, "delete": 0, "upload": 0}
    assert stats["info"] + stats["schema"] + stats["read"] == stats["total"]
    assert _journal_rows(journal) == before
    assert sandbox.trackors("IntegrationLog") == []


def _journal_rows(path) -> dict:
    db = sqlite3.connect(path)
    try:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("runs", "records",
                                                                                               "loose")}
    finally:
        db.close()


# ---------------------------------------------------------------- the flag

@pytest.mark.parametrize("flags, message", [
    (["--check", "--replay"], "argument --check: not allowed with --replay"),
    (["--check", "--status"], "argument --check: not allowed with --status"),
    (["--check", "--name", "A"], "argument --check: not allowed with --name"),
    (["--check", "--control-process", "x"], "argument --check: not allowed with --control-process"),
])
def test_check_is_a_mode_of_its_own(flags, message, capsys, tmp_path):
    from hub import cli
    with pytest.raises(SystemExit) as stopped:
        cli.parse(cli.wrapper_parser(), ["-p", "P.json"] + flags)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_check_takes_i_and_needs_it_not():
    from hub import cli
    assert cli.parse(cli.wrapper_parser(), ["-p", "P.json", "--check"]).integrations is None
    assert cli.parse(cli.wrapper_parser(), ["-p", "P.json", "--check", "-i", "I.json"]).integrations == "I.json"


# ---------------------------------------------------------------- pure helpers

def test_near_miss_takes_case_and_typos_but_not_loose_guesses():
    assert check.near_miss("executed Without warnings", ["Running", "Executed without Warnings"]) == \
        "Executed without Warnings"
    assert check.near_miss("IL_FILES", ["IL_FILE", "IL_MESSAGE"]) == "IL_FILE"
    assert check.near_miss("INT_NAME", ["INT_ENABLED", "INT_LAST_RUN"]) is None


# ---------------------------------------------------------------- the README's samples are real

def _readme_sample(after: str) -> list:
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    block = text[text.index(after):].split("```\n", 2)[1]
    return [line for line in block.splitlines() if not line.startswith("$") and line != "0"]


def _comparable(lines, port) -> list:
    """The lines that do not depend on this machine (paths of Passwords.json, programs, folders)."""
    return [line.replace(f"127.0.0.1:{port}", "127.0.0.1:8080") for line in lines
            if "readable only by its owner" not in line and "program /" not in line
            and "working directory /" not in line]


def test_the_readme_shows_what_check_prints_for_a_healthy_sandbox(sandboxes, run_check, monkeypatch):
    sandbox = sandboxes()
    monkeypatch.chdir(REPO_ROOT)
    with open(os.path.join(REPO_ROOT, "Integration.example.json")) as example:
        entries = json.load(example)
    result = run_check(sandbox.url, entries=entries)
    assert result.code == 0
    assert _comparable(result.lines, sandbox.port) == _comparable(_readme_sample("Against a healthy installation"),
                                                                  8080)


def test_the_readme_shows_what_check_prints_for_a_broken_sandbox(sandboxes, run_check, monkeypatch):
    sandbox = sandboxes(drop_fields=["IL_FILE"], mandatory_fields=["IntegrationRun.IR_APPROVER"],
                        autogen_keys=["IntegrationRun"], timezone="Europe/Berlin")
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.delenv("SINCE", raising=False)
    entries = [{"IntegrationName": "Example daily import",
                "ExecutablePath": "python3 examples/daily_import.py --since ${SINCE}"},
               {"IntegrationName": "Example Nightly Export", "ExecutablePath": "sh examples/nightly_export.sh",
                "ExecutableWorkingDir": "/opt/exports"}]
    assert not os.path.exists("/opt/exports")
    result = run_check(sandbox.url, schema={"integration": {"enabled": "int_enabled"},
                                            "run": {"ok": "Executed Without Warnings"}},
                       entries=entries, Timezone="America/New_York")
    assert result.code == 2
    assert _comparable(result.lines, sandbox.port) == _comparable(_readme_sample("Against a broken one"), 8080)
