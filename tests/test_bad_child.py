"""Bad child commands through IntegrationWrapper (SPEC §3, §5 step 5, §8).

Two levels, as the code and SPEC draw them:
- the command line itself is wrong (unbalanced quotes, an unset ${VAR}, no program): a
  configuration error of that entry: exit 2 for it, "error: NAME: ExecutablePath ..." on stderr,
  no run is created, the other entries still run;
- the command line is fine but the program cannot start (missing, not executable, a directory, a
  missing working directory, a missing #! interpreter): the run is created, gets an Error record
  saying why, ends "Executed with Warnings"; exit 1.
Neither ever shows an argument's value (they may hold secrets) nor a traceback.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

SECRET = "s3cr3t-token-value-42"


def only_run(hub, key):
    runs = hub.runs(key)
    assert len(runs) == 1, runs
    return runs[0]


# ---------------------------------------------------------------- the entry's command line is wrong: exit 2

@pytest.mark.parametrize("path, env, parts", [
    ('/bin/echo "unclosed', {}, ["ExecutablePath has unbalanced quotes"]),
    ("/bin/echo 'unclosed", {}, ["ExecutablePath has unbalanced quotes"]),
    ("/bin/echo trailing\\", {}, ["trailing backslash"]),
    ("/bin/echo ${HUB_BAD_UNSET_VAR}", {}, ["ExecutablePath: ${HUB_BAD_UNSET_VAR} is not set in the environment"]),
    ("${HUB_BAD_UNSET_PROGRAM} --token=${HUB_BAD_TOKEN}", {"HUB_BAD_TOKEN": SECRET},
     ["${HUB_BAD_UNSET_PROGRAM} is not set"]),
    ("/bin/echo ${bad name}", {}, ["ExecutablePath has a bad variable reference"]),
    ("/bin/echo ${UNCLOSED", {}, ["ExecutablePath has a bad variable reference"]),
    ("'' --token=%s" % SECRET, {}, ["ExecutablePath has no program"]),
])
def test_a_bad_command_line_is_exit_2_for_that_entry_and_names_executablepath(hub, capsys, monkeypatch,
                                                                            path, env, parts):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HUB_BAD_UNSET_VAR", raising=False)
    monkeypatch.delenv("HUB_BAD_UNSET_PROGRAM", raising=False)
    bad, good = hub.add_integration("Bad"), hub.add_integration("Good")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Bad", "ExecutablePath": path},
                                             {"IntegrationName": "Good", "ExecutablePath": "true"}))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: Bad: " in err
    for part in parts:
        assert part in err, (part, err)
    assert "Traceback" not in err and SECRET not in err
    assert not hub.runs(bad), "no run for an entry whose command line cannot be split"
    assert only_run(hub, good)["IR_STATUS"] == "Executed without Warnings"
    log = hub.hub_log()
    assert parts[0] in log and SECRET not in log


@pytest.mark.parametrize("path, part", [
    ("", 'entry #1 ("Bad").ExecutablePath: must not be empty'),
    ("   ", 'entry #1 ("Bad").ExecutablePath: must not be empty'),
])
def test_an_empty_command_is_a_configuration_error_and_nothing_runs(hub, capsys, path, part):
    key = hub.add_integration("Bad")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Bad", "ExecutablePath": path}))
    err = capsys.readouterr().err
    assert code == 2 and part in err, err
    assert not hub.runs(key) and hub.sandbox.stats()["create"] == 1  # only add_integration's


def test_a_bad_command_line_through_the_real_script(hub, monkeypatch):
    monkeypatch.delenv("HUB_BAD_UNSET_VAR", raising=False)
    hub.add_integration("Bad")
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file(
        {"IntegrationName": "Bad", "ExecutablePath": "/bin/echo ${HUB_BAD_UNSET_VAR}"}), "--drain-seconds", "2")
    assert done.returncode == 2
    assert done.stderr == "error: Bad: ExecutablePath: ${HUB_BAD_UNSET_VAR} is not set in the environment\n"
    assert done.stdout == ""


# ---------------------------------------------------------------- the program cannot start: run, Error record, exit 1

def _not_executable(tmp_path):
    path = tmp_path / "job.sh"
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(0o644)
    return {"ExecutablePath": "%s --token=%s" % (path, SECRET)}, "not executable: %s" % path


def _directory(tmp_path):
    return {"ExecutablePath": "%s --token=%s" % (tmp_path, SECRET)}, "is a directory: %s" % tmp_path


def _missing(tmp_path):
    return {"ExecutablePath": "/no/such/program --token=%s" % SECRET}, "no such program: /no/such/program"


def _missing_on_path(tmp_path):
    return {"ExecutablePath": "hub-no-such-program-xyz --token=%s" % SECRET}, \
        "no such program: hub-no-such-program-xyz"


def _relative_missing(tmp_path):
    return {"ExecutablePath": "bin/run.sh --token=%s" % SECRET, "ExecutableWorkingDir": str(tmp_path)}, \
        "no such program: %s" % (tmp_path / "bin" / "run.sh")


def _missing_interpreter(tmp_path):
    path = tmp_path / "job.py"
    path.write_text("#!/no/such/python3\nprint('hi')\n")
    path.chmod(0o755)
    return {"ExecutablePath": "%s --token=%s" % (path, SECRET)}, "its #! interpreter was not found"


def _no_shebang(tmp_path):
    path = tmp_path / "job.bin"
    path.write_bytes(b"\x7fELF\x02garbage")
    path.chmod(0o755)
    return {"ExecutablePath": "%s --token=%s" % (path, SECRET)}, "not an executable format"


def _missing_dir(tmp_path):
    return {"ExecutablePath": "true --token=%s" % SECRET, "ExecutableWorkingDir": str(tmp_path / "gone")}, \
        "working directory does not exist: %s" % (tmp_path / "gone")


def _file_as_dir(tmp_path):
    (tmp_path / "plain").write_text("x")
    return {"ExecutablePath": "true", "ExecutableWorkingDir": str(tmp_path / "plain")}, \
        "working directory is not a directory: %s" % (tmp_path / "plain")


@pytest.mark.parametrize("make", [_not_executable, _directory, _missing, _missing_on_path, _relative_missing,
                                  _missing_interpreter, _no_shebang, _missing_dir, _file_as_dir],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_program_that_cannot_start_gets_a_run_an_error_record_and_exit_1(hub, tmp_path, capsys, make):
    work = tmp_path / "work"
    work.mkdir()
    entry, reason = make(work)
    key = hub.add_integration("Broken")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Broken", **entry}))
    captured = capsys.readouterr()
    assert code == 1, captured.err
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed with Warnings" and run["IR_FINISH"]
    [record] = hub.logs(run["TRACKOR_KEY"])
    assert record["IL_MESSAGE_TYPE"] == "Error"
    assert reason in record["IL_DESCRIPTION"], record
    assert record["IL_MESSAGE"].startswith("Could not start ")
    everything = captured.out + captured.err + hub.hub_log() + json.dumps(hub.logs())
    assert SECRET not in everything and "Traceback" not in everything
    assert reason in hub.hub_log()


def test_no_execute_bit_on_the_working_directory_is_a_start_failure(hub, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root enters any directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR)
    try:
        key = hub.add_integration("Locked")
        assert hub.wrapper(hub.integrations_file({"IntegrationName": "Locked", "ExecutablePath": "true",
                                                  "ExecutableWorkingDir": str(locked)})) == 1
        [record] = hub.logs(only_run(hub, key)["TRACKOR_KEY"])
        assert "Could not start" in record["IL_MESSAGE"]
    finally:
        locked.chmod(stat.S_IRWXU)
