"""What the scripts say (SPEC §10 last paragraph, §6): on a terminal the wrapper tells the person
what it does; without one (cron) only warnings and errors; -q and -v; AddingLog's Log ID only on
a terminal or with --print-id; a selection that matches nothing is exit 4 naming what exists.
The terminal is a real pseudo terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.hubtest import fixture_command


def on_a_terminal(hub, script, *args, timeout=60):
    """Run a root script with stdout and stderr on a pseudo terminal; (exit code, what it printed)."""
    master, slave = pty.openpty()
    argv = [sys.executable, os.path.join(REPO_ROOT, script), *hub.common(*args)]
    proc = subprocess.Popen(argv, cwd=hub.tmp, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError("no output for %s s: %r" % (timeout, out))
        try:
            data = os.read(master, 65536)
        except OSError:   # the other side closed: the process is done
            break
        if not data:
            break
        out += data
    os.close(master)
    return proc.wait(timeout), out.decode("utf-8", "replace").replace("\r\n", "\n")


def test_on_a_terminal_the_wrapper_says_each_entry_as_it_starts_and_ends(hub):
    hub.add_integration("Talky")
    path = hub.integrations_file({"IntegrationName": "Talky", "ExecutablePath": fixture_command("says.py", "out:hi")})
    code, said = on_a_terminal(hub, "IntegrationWrapper.py", "-i", path)
    assert code == 0, said
    run_key = hub.runs()[0]["TRACKOR_KEY"]
    assert f"Talky: run {run_key} started" in said
    assert f"Talky: run {run_key}: Executed without Warnings (exit code 0)" in said
    assert "1 record and 0 files delivered; nothing owed" in said


def test_without_a_terminal_a_good_run_prints_nothing_and_a_failed_one_one_warning(hub):
    hub.add_integration("Quiet")
    hub.add_integration("Fails")
    path = hub.integrations_file({"IntegrationName": "Quiet", "ExecutablePath": fixture_command("says.py", "out:hi")},
                                 {"IntegrationName": "Fails", "ExecutablePath": fixture_command("ends.py", "exit", "3")})
    done = hub.script("IntegrationWrapper.py", "-i", path)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("warning: Fails: run ") and "Executed with Warnings (exit code 3)" in line


def test_quiet_keeps_only_errors_and_verbose_talks_without_a_terminal(hub):
    hub.add_integration("Fails")
    path = hub.integrations_file({"IntegrationName": "Fails", "ExecutablePath": fixture_command("ends.py", "exit", "3")})
    assert hub.script("IntegrationWrapper.py", "-i", path, "-q").stderr == ""
    verbose = hub.script("IntegrationWrapper.py", "-i", path, "-v").stderr
    assert "Fails: run " in verbose and " started" in verbose and "Executed with Warnings (exit code 3)" in verbose


def test_replay_on_a_terminal_shows_its_progress_and_its_result(hub):
    hub.add_integration("Backlog")
    path = hub.integrations_file({"IntegrationName": "Backlog", "ExecutablePath": fixture_command(
        "takes_onevizion_down.py", hub.sandbox.url, "600", "50", "0")})
    assert hub.wrapper(path, "--drain-seconds", "0.5") == 75
    hub.sandbox.clear_faults()
    code, said = on_a_terminal(hub, "IntegrationWrapper.py", "--replay")
    assert code == 0, said
    assert "replay: [" in said and "] " in said          # the bar, drawn at least once
    assert "replay: delivered" in said and "0 records and 0 statuses remain" in said


def test_adding_log_prints_its_log_id_only_on_a_terminal_or_when_asked(hub):
    run_key = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "start").stdout.strip()
    quiet = hub.script("IntegrationWrapperAddingLog.py", "-i", "INT-1", "-r", run_key, "-w", "Info", "-m", "a")
    assert (quiet.returncode, quiet.stdout) == (0, "")
    asked = hub.script("IntegrationWrapperAddingLog.py", "-i", "INT-1", "-r", run_key, "-w", "Info", "-m", "b",
                       "--print-id")
    assert asked.stdout.strip().startswith(run_key + "-X")
    code, said = on_a_terminal(hub, "IntegrationWrapperAddingLog.py", "-i", "INT-1", "-r", run_key, "-w", "Info",
                               "-m", "c")
    assert code == 0 and said.strip().startswith(run_key + "-X")
    assert sorted(r["IL_MESSAGE"] for r in hub.logs(run_key)) == ["a", "b", "c"]


def test_a_name_or_control_process_that_selects_nothing_is_exit_4_naming_what_exists(hub):
    hub.add_integration("Nightly", control="nightly")
    path = hub.integrations_file({"IntegrationName": "Nightly", "ExecutablePath": "true"})
    by_name = hub.script("IntegrationWrapper.py", "-i", path, "--name", "Nigthly")
    assert by_name.returncode == 4
    assert "'Nigthly'" in by_name.stderr and "'Nightly'" in by_name.stderr
    by_process = hub.script("IntegrationWrapper.py", "-i", path, "--control-process", "hourly")
    assert by_process.returncode == 4
    assert "'hourly'" in by_process.stderr and "'nightly'" in by_process.stderr
    assert hub.runs() == []
