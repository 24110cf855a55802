"""IntegrationWrapperAddingLog.py and IntegrationWrapperRunController.py against the sandbox (SPEC §6, §7)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import REPO_ROOT




def start(hub, key, *extra):
    done = hub.script("IntegrationWrapperRunController.py", "-i", key, "-t", "start", *extra)
    return done


def add_log(hub, key, *extra, env=None):
    return hub.script("IntegrationWrapperAddingLog.py", "-i", key, *extra, env=env)


def test_start_prints_the_run_key_alone_and_opens_a_running_run(hub):
    done = start(hub, "INT-1")
    assert done.returncode == 0, done.stderr
    run_key = done.stdout.strip()
    assert done.stdout == run_key + "\n" and run_key.startswith("INT-1-")
    [run] = hub.runs("INT-1")
    assert run["TRACKOR_KEY"] == run_key and run["IR_STATUS"] == "Running" and run["IR_START"]
    assert hub.sandbox.trackors("Integration")[0]["INT_LAST_RUN"] == run["IR_START"]


@pytest.mark.parametrize("errors, status", [(None, "Executed without Warnings"), ("0", "Executed without Warnings"),
                                            ("1", "Executed with Warnings")])
def test_stop_closes_the_latest_running_run_with_the_status_for_e(hub, errors, status):
    start(hub, "INT-1")
    done = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "stop",
                      *(["-e", errors] if errors else []))
    assert done.returncode == 0, done.stderr
    [run] = hub.runs("INT-1")
    assert run["IR_STATUS"] == status and run["IR_FINISH"]


def test_stop_without_a_running_run_exits_4(hub):
    done = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "stop")
    assert done.returncode == 4 and "no run with status 'Running'" in done.stderr


def test_start_refuses_a_disabled_integration_unless_forced(hub):
    key = hub.add_integration("Dormant", enabled=0)
    refused = start(hub, key)
    assert refused.returncode == 5 and "disabled" in refused.stderr and hub.runs(key) == []
    assert start(hub, key, "--force").returncode == 0 and len(hub.runs(key)) == 1


def test_an_unknown_integration_exits_4(hub):
    assert start(hub, "INT-404").returncode == 4
    assert add_log(hub, "INT-404", "-w", "Info", "-m", "x").returncode == 4


@pytest.mark.parametrize("given, expected", [("0", "Info"), ("1", "Warning"), ("2", "Error"), ("warning", "Warning"),
                                             ("ERROR", "Error")])
def test_adding_log_lands_on_the_latest_running_run_with_its_type(hub, given, expected):
    run_key = start(hub, "INT-1").stdout.strip()
    # --print-id: the Log ID is printed only on a terminal or when asked (SPEC §6 since the second version).
    done = add_log(hub, "INT-1", "-w", given, "-m", "checkpoint reached", "-d", "all 12 files in", "--print-id")
    assert done.returncode == 0, done.stderr
    [record] = hub.logs(run_key)
    assert record["TRACKOR_KEY"] == done.stdout.strip() and record["TRACKOR_KEY"].startswith(run_key + "-X")
    assert (record["IL_MESSAGE_TYPE"], record["IL_MESSAGE"], record["IL_DESCRIPTION"]) == \
        (expected, "checkpoint reached", "all 12 files in")
    assert record["IL_DATE_TIME"]


def test_adding_log_cuts_the_message_and_keeps_it_whole_in_the_description(hub):
    run_key = start(hub, "INT-1").stdout.strip()
    add_log(hub, "INT-1", "-w", "0", "-m", "m" * 300)
    [record] = hub.logs(run_key)
    assert len(record["IL_MESSAGE"]) == 255 and record["IL_MESSAGE"].endswith("\u2026")
    assert record["IL_DESCRIPTION"] == "m" * 300


def test_adding_log_uploads_a_file_to_its_record(hub, tmp_path):
    run_key = start(hub, "INT-1").stdout.strip()
    attachment = tmp_path / "result.txt"
    attachment.write_text("42 rows\n")
    assert add_log(hub, "INT-1", "-w", "Info", "-m", "see file", "-f", str(attachment)).returncode == 0
    [record] = hub.logs(run_key)
    assert record["IL_FILE"]["file_name"] == "result.txt"


def test_adding_log_with_r_targets_that_run_and_an_unknown_run_exits_4(hub):
    first = start(hub, "INT-1").stdout.strip()
    start(hub, "INT-1")
    assert add_log(hub, "INT-1", "-r", first, "-w", "Info", "-m", "to the first").returncode == 0
    assert [r["IL_MESSAGE"] for r in hub.logs(first)] == ["to the first"]
    missing = add_log(hub, "INT-1", "-r", "INT-1-nope", "-w", "Info", "-m", "lost?")
    assert missing.returncode == 4 and "INT-1-nope" in missing.stderr


def test_without_a_running_run_adding_log_exits_4(hub):
    done = add_log(hub, "INT-1", "-w", "Info", "-m", "nobody listens")
    assert done.returncode == 4 and "no run with status 'Running'" in done.stderr


def test_many_parallel_calls_against_one_run_all_land(hub):
    # 25, not 10: enough processes that some start after others ended, so their replays adopt
    # the run's journal row while its records are still being added and sent.
    run_key = start(hub, "INT-1").stdout.strip()
    with ThreadPoolExecutor(25) as pool:
        results = list(pool.map(lambda n: add_log(hub, "INT-1", "-r", run_key, "-w", "Info", "-m", f"call {n}"),
                                range(25)))
    assert [(r.returncode, r.stderr) for r in results] == [(0, "")] * 25
    assert sorted(r["IL_MESSAGE"] for r in hub.logs(run_key)) == sorted(f"call {n}" for n in range(25))


def test_a_wrapped_child_logs_to_its_own_run_while_another_run_is_open(hub, repo_root):
    key = hub.add_integration("Nested")
    py, tool = shlex.quote(sys.executable), lambda name: shlex.quote(os.path.join(repo_root, name))
    common = f"-p {shlex.quote(hub.passwords)} --log-dir {shlex.quote(hub.log_dir)} -i \"$HUB_INTEGRATION_ID\""
    command = (f"{py} {tool('IntegrationWrapperRunController.py')} {common} -t start >/dev/null && "
               f"{py} {tool('IntegrationWrapperAddingLog.py')} {common} -w Warning -m 'from the child' >/dev/null")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Nested", "ExecutablePath": command, "Shell": True}))
    assert code == 0
    runs = {r["IR_STATUS"]: r["TRACKOR_KEY"] for r in hub.runs(key)}
    assert set(runs) == {"Running", "Executed without Warnings"}  # the child's own extra run stays open
    assert [r["IL_MESSAGE"] for r in hub.logs(runs["Executed without Warnings"])] == ["from the child"]
    assert hub.logs(runs["Running"]) == []


def test_a_shell_script_opens_logs_and_closes_a_run(hub, repo_root, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(f"""set -e
PY={shlex.quote(sys.executable)}; HUB={shlex.quote(repo_root)}
COMMON="-p {hub.passwords} --log-dir {hub.log_dir} -i INT-2"
RUN=$($PY $HUB/IntegrationWrapperRunController.py $COMMON -t start)
$PY $HUB/IntegrationWrapperAddingLog.py $COMMON -r "$RUN" -w Info -m "step 1 done" >/dev/null
$PY $HUB/IntegrationWrapperAddingLog.py $COMMON -r "$RUN" -w Error -m "step 2 failed" >/dev/null
$PY $HUB/IntegrationWrapperRunController.py $COMMON -t stop -r "$RUN" -e 1
echo "$RUN"
""")
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    run_key = done.stdout.strip()
    [run] = hub.runs("INT-2")
    assert run["TRACKOR_KEY"] == run_key and run["IR_STATUS"] == "Executed with Warnings"
    assert [(r["IL_MESSAGE_TYPE"], r["IL_MESSAGE"]) for r in hub.logs(run_key)] == \
        [("Info", "step 1 done"), ("Error", "step 2 failed")]


def test_when_onevizion_is_down_the_record_waits_in_the_journal_then_the_next_call_delivers_it(hub):
    run_key = start(hub, "INT-1").stdout.strip()
    hub.sandbox.set_faults(down_for_s=60)
    down = add_log(hub, "INT-1", "-r", run_key, "-w", "Error", "-m", "written while down")
    assert down.returncode == 75 and "kept in the local journal" in down.stderr
    assert hub.logs(run_key) == []
    hub.sandbox.clear_faults()
    later = add_log(hub, "INT-1", "-r", run_key, "-w", "Info", "-m", "written later")
    assert later.returncode == 0, later.stderr
    assert sorted(r["IL_MESSAGE"] for r in hub.logs(run_key)) == ["written later", "written while down"]


def test_a_stop_while_onevizion_is_down_is_delivered_by_the_next_invocation(hub):
    run_key = start(hub, "INT-1").stdout.strip()
    hub.sandbox.set_faults(down_for_s=60)
    stopped = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "stop", "-r", run_key, "-e", "1")
    assert stopped.returncode == 75
    hub.sandbox.clear_faults()
    replay = hub.script("IntegrationWrapper.py", "--replay")
    assert replay.returncode == 0, replay.stderr + replay.stdout
    assert "delivered 0 records and 1 final statuses" in replay.stdout
    assert hub.runs("INT-1")[0]["IR_STATUS"] == "Executed with Warnings"


def test_a_record_delivered_by_replay_leaves_nothing_in_the_journal(hub):
    run_key = start(hub, "INT-1").stdout.strip()
    hub.sandbox.set_faults(down_for_s=60)
    assert add_log(hub, "INT-1", "-r", run_key, "-w", "Info", "-m", "late").returncode == 75
    hub.sandbox.clear_faults()
    replay = hub.script("IntegrationWrapper.py", "--replay")
    assert "delivered 1 records" in replay.stdout
    assert [r["IL_MESSAGE"] for r in hub.logs(run_key)] == ["late"]
    assert (hub.journal_rows("runs"), hub.journal_rows("records")) == (0, 0)


def _helper_env():
    # Buffered stdout, as under cron: what is printed is written when the helper ends.
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def test_start_whose_run_key_cannot_be_written_says_so_opens_the_run_and_exits_1(hub):
    read_end, write_end = os.pipe()
    os.close(read_end)   # the reader is gone before the key is written
    try:
        done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapperRunController.py"),
                               *hub.common("-i", "INT-1", "-t", "start")], cwd=hub.tmp, env=_helper_env(),
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: the run key INT-1-") and "could not be written to stdout" in line
    [run] = hub.runs("INT-1")   # the run itself was opened; only its key was lost
    assert run["IR_STATUS"] == "Running" and line.split()[4] == run["TRACKOR_KEY"]


def test_a_record_id_that_cannot_be_written_says_so_and_exits_1(hub):
    start(hub, "INT-1")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapperAddingLog.py"),
                               *hub.common("-i", "INT-1", "-w", "Info", "-m", "lost id", "--print-id")],
                              cwd=hub.tmp, env=_helper_env(), stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 1 and "could not be written to stdout" in done.stderr, done.stderr
    assert [log["IL_MESSAGE"] for log in hub.logs()] == ["lost id"]


def test_helpers_with_stdout_closed_still_do_their_work_and_exit_0(hub):
    argv = [sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapperRunController.py"),
            *hub.common("-i", "INT-1", "-t", "start")]
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *argv], cwd=hub.tmp, env=_helper_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    added = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable,
                            os.path.join(REPO_ROOT, "IntegrationWrapperAddingLog.py"),
                            *hub.common("-i", "INT-1", "-w", "Info", "-m", "stdout closed")],
                           cwd=hub.tmp, env=_helper_env(), capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    assert [log["IL_MESSAGE"] for log in hub.logs()] == ["stdout closed"]
