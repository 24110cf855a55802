"""The answer table for the helper scripts' own calls (SPEC §5, §6, §7), as real processes over
real HTTP: IntegrationWrapperAddingLog.py's run lookups, its record create and file upload;
IntegrationWrapperRunController.py's run create, Last Run and status update. And the helpers'
promises: a record waits for a run the journal still owes, HUB_RUN_ID alone, offline without
-r, its own item first, stop -r on a closed run."""

from __future__ import annotations

import os
import shlex
import sys
import time

import pytest

from tests.answer_table import CALLS, REFUSED, TRANSIENT, assert_no_traceback, journal, journal_refused, main

# Two Retry-After of a second each outlast the 1 s the hub fixture gives a helper (default 5 s).
PATIENT = {"HUB_DELIVERY_SECONDS": "5"}
RUN_LOOKUP = dict(method="GET", path=r"^/api/v3/trackor_types/IntegrationRun/trackors$")


def start(hub, key="INT-1", **kwargs):
    done = hub.script("IntegrationWrapperRunController.py", "-i", key, "-t", "start", **kwargs)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def add_log(hub, *args, key="INT-1", env=None):
    done = hub.script("IntegrationWrapperAddingLog.py", "-i", key, "-w", "Info", *args, env=env)
    assert_no_traceback(done.stderr)
    return done


def messages(hub, run_key):
    return [r["IL_MESSAGE"] for r in hub.logs(run_key)]


# -- AddingLog's record create and upload -----------------------------------------------------------

@pytest.mark.parametrize("answer", ["reset", "dropped", "cut short", "429 with Retry-After", "503", "504"])
def test_adding_logs_record_answered_transiently_is_retried_and_lands_once(hub, answer):
    run_key = start(hub)
    hub.sandbox.add_rule(times=2, **CALLS["record create"], **TRANSIENT[answer])
    done = add_log(hub, "-r", run_key, "-m", "checkpoint", env=PATIENT)
    assert done.returncode == 0, done.stderr
    assert hub.sandbox.rules() == [] and messages(hub, run_key) == ["checkpoint"]
    assert hub.journal_rows("records") == 0


@pytest.mark.parametrize("answer", ["reset", "500", "HTML page"])
def test_adding_logs_record_committed_then_failed_is_read_back_not_duplicated(hub, answer):
    run_key = start(hub)
    failure = {"reset": dict(reset=True), "500": dict(status=500, body="oops"),
               "HTML page": dict(content_type="text/html", body="<html>Gateway</html>")}[answer]
    hub.sandbox.add_rule(times=1, after_commit=True, **CALLS["record create"], **failure)
    done = add_log(hub, "-r", run_key, "-m", "once only")
    assert done.returncode == 0, done.stderr
    assert messages(hub, run_key) == ["once only"]


@pytest.mark.parametrize("answer", ["400", "403", "422", "login redirect", "HTML 200", "[] 200"])
def test_adding_logs_refused_record_is_kept_as_refused_exit_6(hub, capsys, answer):
    run_key = start(hub)
    hub.sandbox.add_rule(times=1, **CALLS["record create"], **REFUSED[answer])
    done = add_log(hub, "-r", run_key, "-m", "refused one")
    assert done.returncode == 6, done.stderr
    [line] = done.stderr.splitlines()
    assert "refused 1 item" in line and "see --status" in line
    [refused] = journal_refused(hub)
    assert "record " + run_key + "-X" in refused
    assert main(hub, capsys, "--status")[0] == 6
    assert main(hub, capsys, "--replay", "--retry-refused")[0] == 0
    assert messages(hub, run_key) == ["refused one"]


def test_adding_logs_record_answered_500_five_times_is_refused(hub):
    run_key = start(hub)
    hub.sandbox.add_rule(times=5, status=500, body="ORA-20001", **CALLS["record create"])
    done = add_log(hub, "-r", run_key, "-m", "five times")
    assert done.returncode == 6 and "500: ORA-20001" in done.stderr
    assert messages(hub, run_key) == []


def test_adding_log_answered_401_sends_nothing_more_and_keeps_the_record(hub, capsys):
    run_key = start(hub)
    hub.sandbox.add_rule(status=401, body="User is temporarily locked", **CALLS["record create"])
    done = add_log(hub, "-r", run_key, "-m", "locked out")
    assert done.returncode == 75
    assert "refused the credentials" in done.stderr
    assert hub.sandbox.rules()[0]["matched"] == 1
    hub.sandbox.clear_rules()
    assert main(hub, capsys, "--replay")[0] == 0
    assert messages(hub, run_key) == ["locked out"]


@pytest.mark.parametrize("answer, code", [("503", 0), ("403", 6), ("401", 75)])
def test_adding_logs_file_upload_answers(hub, capsys, tmp_path, answer, code):
    run_key = start(hub)
    attachment = tmp_path / "result.txt"
    attachment.write_text("42 rows\n")
    rule = dict(TRANSIENT, **REFUSED, **{"401": dict(status=401, body="locked")})[answer]
    hub.sandbox.add_rule(times=2 if answer == "503" else None, **CALLS["file upload"], **rule)
    done = add_log(hub, "-r", run_key, "-m", "with a file", "-f", str(attachment))
    assert done.returncode == code, done.stderr
    [record] = hub.logs(run_key)          # the record exists once, whatever the upload got
    hub.sandbox.clear_rules()
    if code:
        assert record["IL_FILE"] is None
        assert main(hub, capsys, "--replay", "--retry-refused")[0] == 0
    [record] = hub.logs(run_key)
    assert record["IL_FILE"]["file_name"] == "result.txt"


# -- AddingLog's run lookups ------------------------------------------------------------------------

@pytest.mark.parametrize("answer", ["reset", "503", "500", "cut short"])
def test_adding_logs_run_lookup_answered_transiently_twice_is_retried(hub, answer):
    run_key = start(hub)
    rule = dict(TRANSIENT, **{"500": dict(status=500, body="oops")})[answer]
    hub.sandbox.add_rule(times=2, **RUN_LOOKUP, **rule)
    done = add_log(hub, "-m", "found after all")
    assert done.returncode == 0, done.stderr
    assert hub.sandbox.rules() == [] and messages(hub, run_key) == ["found after all"]


@pytest.mark.parametrize("answer", ["reset", "503", "cut short"])
def test_adding_log_with_r_trusts_the_run_when_its_lookup_fails_transiently(hub, answer):
    run_key = start(hub)
    hub.sandbox.add_rule(**RUN_LOOKUP, **TRANSIENT[answer])
    done = add_log(hub, "-r", run_key, "-m", "trusted")
    assert done.returncode == 0, done.stderr
    assert messages(hub, run_key) == ["trusted"]


@pytest.mark.parametrize("answer, code, message", [
    ("403", 3, "lacks permission (403)"),
    ("login redirect", 3, "redirected"),
    ("HTML 200", 3, "not JSON"),
    ("401", 3, "refused the credentials"),
])
def test_adding_logs_run_lookup_refused_sends_nothing(hub, answer, code, message):
    run_key = start(hub)
    rule = dict(REFUSED, **{"401": dict(status=401, body="locked")})[answer]
    hub.sandbox.add_rule(**RUN_LOOKUP, **rule)
    done = add_log(hub, "-m", "not sent")
    assert done.returncode == code and message in done.stderr, done.stderr
    assert messages(hub, run_key) == [] and hub.journal_rows("records") == 0


# -- RunController's calls ----------------------------------------------------------------------------

@pytest.mark.parametrize("call", ["run create", "Last Run"])
@pytest.mark.parametrize("answer", ["reset", "503", "429 with Retry-After"])
def test_runcontroller_start_answered_transiently_opens_one_run(hub, call, answer):
    hub.sandbox.add_rule(times=2, **CALLS[call], **TRANSIENT[answer])
    run_key = start(hub, env=PATIENT)
    assert [r["TRACKOR_KEY"] for r in hub.runs("INT-1")] == [run_key]
    assert hub.sandbox.trackors("Integration")[0]["INT_LAST_RUN"] == hub.runs("INT-1")[0]["IR_START"]


def test_runcontroller_start_not_confirmed_says_what_waits_and_replay_delivers_it(hub, capsys):
    hub.sandbox.add_rule(status=503, body="Service Unavailable", **CALLS["run create"])
    done = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "start")
    assert done.returncode == 75
    assert "the run's create waits in the journal" in done.stderr and "final status" not in done.stderr
    hub.sandbox.clear_rules()
    assert main(hub, capsys, "--replay")[0] == 0
    assert [r["TRACKOR_KEY"] for r in hub.runs("INT-1")] == [done.stdout.strip()]


def test_runcontroller_start_committed_then_reset_opens_one_run(hub):
    hub.sandbox.add_rule(times=1, after_commit=True, reset=True, **CALLS["run create"])
    run_key = start(hub)
    assert [r["TRACKOR_KEY"] for r in hub.runs("INT-1")] == [run_key]


@pytest.mark.parametrize("answer", ["403", "HTML 200", "[] 200"])
def test_runcontroller_start_refused_prints_the_key_exits_6_and_keeps_it(hub, capsys, answer):
    hub.sandbox.add_rule(times=1, **CALLS["run create"], **REFUSED[answer])
    done = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "start")
    assert done.returncode == 6, done.stderr
    run_key = done.stdout.strip()
    assert hub.runs("INT-1") == []
    assert main(hub, capsys, "--status")[0] == 6
    assert main(hub, capsys, "--replay", "--retry-refused")[0] == 0
    assert [r["TRACKOR_KEY"] for r in hub.runs("INT-1")] == [run_key]


@pytest.mark.parametrize("answer, code, status", [
    ("503", 0, "Executed with Warnings"),
    ("reset", 0, "Executed with Warnings"),
    ("403", 6, "Running"),
    ("login redirect", 6, "Running"),
    ("[] 200", 6, "Running"),
    ("401", 75, "Running"),
])
def test_runcontroller_stop_answers(hub, capsys, answer, code, status):
    run_key = start(hub)
    rule = dict(TRANSIENT, **REFUSED, **{"401": dict(status=401, body="locked")})[answer]
    hub.sandbox.add_rule(times=2 if code == 0 else None, **CALLS["final status"], **rule)
    done = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "stop", "-r", run_key, "-e", "1")
    assert done.returncode == code, done.stderr
    assert_no_traceback(done.stderr)
    assert hub.runs("INT-1")[0]["IR_STATUS"] == status
    hub.sandbox.clear_rules()
    assert main(hub, capsys, "--replay", "--retry-refused")[0] == 0
    assert hub.runs("INT-1")[0]["IR_STATUS"] == "Executed with Warnings"


def test_stop_r_on_a_closed_run_exits_4_naming_its_status_and_changes_nothing_unless_forced(hub):
    run_key = start(hub)
    stop = ["IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "stop", "-r", run_key]
    assert hub.script(*stop, "-e", "1").returncode == 0
    [closed] = hub.runs("INT-1")
    hub.sandbox.reset_stats()
    again = hub.script(*stop, "-e", "0")
    assert again.returncode == 4 and "'Executed with Warnings'" in again.stderr and "--force" in again.stderr
    assert hub.runs("INT-1") == [closed] and hub.sandbox.stats()["update"] == 0
    forced = hub.script(*stop, "-e", "0", "--force")
    assert forced.returncode == 0, forced.stderr
    assert hub.runs("INT-1")[0]["IR_STATUS"] == "Executed without Warnings"


def test_stop_r_whose_run_cannot_be_read_closes_it_only_if_still_running(hub):
    """The lookup of -r is answered 503: the stop is kept, and the run's status is read again just
    before the final status goes. Closed meanwhile: exit 4 naming its status, nothing changed."""
    run_key = start(hub)
    stop = ["IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "stop", "-r", run_key]
    assert hub.script(*stop, "-e", "1").returncode == 0
    [closed] = hub.runs("INT-1")
    hub.sandbox.add_rule(times=1, status=503, body="Service Unavailable", **RUN_LOOKUP)
    hub.sandbox.reset_stats()
    again = hub.script(*stop, "-e", "0")
    assert again.returncode == 4, again.stderr
    assert "'Executed with Warnings'" in again.stderr and "nothing changed" in again.stderr
    assert hub.runs("INT-1") == [closed] and hub.sandbox.stats()["update"] == 0
    assert (hub.journal_rows("runs"), hub.journal_rows("records")) == (0, 0)


def test_a_deferred_stop_of_a_run_closed_meanwhile_is_kept_as_refused_not_sent(hub, capsys):
    run_key = start(hub)
    hub.sandbox.set_faults(down_for_s=60)
    stopped = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "stop", "-r", run_key, "-e", "1")
    assert stopped.returncode == 75, stopped.stderr
    hub.sandbox.clear_faults()
    [run] = hub.runs("INT-1")
    import requests
    closed = requests.put(f"{hub.sandbox.url}/api/v3/trackors/{run['TRACKOR_ID']}", auth=hub.auth,
                          json={"IR_STATUS": "Executed without Warnings"}, timeout=10)
    assert closed.status_code == 200
    code, out = main(hub, capsys, "--replay")
    assert code == 6, out
    assert hub.runs("INT-1")[0]["IR_STATUS"] == "Executed without Warnings"
    code, out = main(hub, capsys, "--status")
    assert code == 6 and "is no longer 'Running'" in out


# -- AddingLog and a run the journal still owes ----------------------------------------------------------

def test_a_childs_record_waits_for_its_run_whose_create_is_still_owed(hub, capsys, repo_root):
    """The run's create is answered 503 for a while; the child's AddingLog (HUB_RUN_ID) must
    neither 404 on the parent nor drop its record: it lands on the run once the create went."""
    key = hub.add_integration("Early")
    hub.sandbox.add_rule(times=12, status=503, body="Service Unavailable", **CALLS["run create"])
    tool = shlex.quote(os.path.join(repo_root, "IntegrationWrapperAddingLog.py"))
    common = f"-p {shlex.quote(hub.passwords)} --log-dir {shlex.quote(hub.log_dir)} -i \"$HUB_INTEGRATION_ID\""
    command = (f"echo before; {shlex.quote(sys.executable)} {tool} {common} -w Warning -m 'from the child'; "
               f"echo adding log said $?")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Early", "ExecutablePath": command, "Shell": True}))
    assert code == 0, capsys.readouterr().err
    assert hub.sandbox.rules() == []
    [run] = hub.runs(key)
    said = messages(hub, run["TRACKOR_KEY"])   # by Log ID: the child's lines, then the helper's record
    assert said[0] == "before" and said[-1] == "from the child" and said.count("from the child") == 1
    assert said[-2] in ("adding log said 0", "adding log said 75")   # 75: it waited, the wrapper sent it


def test_hub_run_id_alone_is_used_when_that_run_belongs_to_the_integration(hub):
    first = start(hub)
    time.sleep(1.1)   # Start has seconds: "the latest Running run" must be this one, not a tie
    newest = start(hub)
    env = {"HUB_RUN_ID": first}
    assert add_log(hub, "-m", "to the first", env=env).returncode == 0
    assert messages(hub, first) == ["to the first"] and messages(hub, newest) == []
    other = start(hub, "INT-2")
    assert add_log(hub, "-m", "not INT-2's", env={"HUB_RUN_ID": other}).returncode == 0
    assert messages(hub, newest) == ["not INT-2's"] and messages(hub, other) == []


def test_offline_without_r_the_record_lands_later_on_the_run_that_was_running_then(hub, capsys):
    then = start(hub)
    hub.sandbox.set_faults(down_for_s=60)
    done = add_log(hub, "-m", "written while down")
    assert done.returncode == 75 and "waits in the local journal" in done.stderr
    status, said = main(hub, capsys, "--status")
    assert status == 75 and "waiting for OneVizion to tell its run" in said
    hub.sandbox.clear_faults()
    time.sleep(1.1)   # date-times have seconds: the next run starts after the call
    stop = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "stop", "-r", then)
    assert stop.returncode == 0, stop.stderr
    later = start(hub)
    assert main(hub, capsys, "--replay")[0] == 0
    assert messages(hub, then) == ["written while down"] and messages(hub, later) == []
    assert journal(hub, "SELECT * FROM loose") == []


def test_a_record_still_waiting_for_its_run_counts_in_replay_and_can_be_discarded(hub, capsys):
    hub.sandbox.set_faults(down_for_s=60)
    assert add_log(hub, "-m", "no run to be found").returncode == 75
    hub.sandbox.clear_faults()
    hub.sandbox.add_rule(status=503, body="Service Unavailable", **RUN_LOOKUP)   # it still cannot be told
    code, said = main(hub, capsys, "--replay")
    assert code == 75 and "1 records and 0 statuses remain" in said, said
    hub.sandbox.clear_rules()
    code, said = main(hub, capsys, "--replay")            # no run was Running then: refused
    assert code == 6 and "1 refused" in said, said
    code, said = main(hub, capsys, "--status")
    [key] = [word for word in said.split() if word.startswith("loose-")]
    assert code == 6 and "is refused: no run of integration INT-1 was Running" in said
    code, said = main(hub, capsys, "--discard", key)
    assert code == 0 and f"discarded record {key}" in said
    assert main(hub, capsys, "--status")[0] == 0
    assert journal(hub, "SELECT * FROM loose") == []


def test_records_waiting_for_their_run_stop_asking_after_a_401_and_say_so(hub, capsys):
    hub.sandbox.set_faults(down_for_s=60)
    for n in range(3):
        assert add_log(hub, "-m", f"waiting {n}").returncode == 75
    hub.sandbox.clear_faults()
    hub.sandbox.add_rule(status=401, body="locked")
    hub.sandbox.reset_stats()
    code, said = main(hub, capsys, "--replay")
    assert code == 75 and "refused the credentials" in said and "3 records and 0 statuses remain" in said, said
    assert hub.sandbox.stats()["ruled"] == 1        # one 401, not one per record


def journal_backlog(hub, run_key, count):
    """`count` records an earlier invocation left for a run that exists in OneVizion (its process
    gone), written through the journal's own API."""
    import json
    import logging
    from hub.config import load_passwords
    from hub.journal import Conditions, Journal
    from hub.state import Origin, RecordRow, RunRow
    installation, _ = load_passwords(hub.passwords)
    [run] = [r for r in hub.runs() if r["TRACKOR_KEY"] == run_key]
    opened = Journal(hub.log_dir, installation.identity(), Conditions(lambda _: None, logging.getLogger("test")))
    row = RunRow(run_key=run_key, installation=installation.identity(), integration_key=run["_parent_key"],
                 origin=Origin.KNOWN, settings={}, started_at=time.time() - 3600, trackor_id=run["TRACKOR_ID"])
    opened.put_run(row)
    opened.put_records(run_key, [RecordRow(f"{run_key}-{n:06d}", run_key, json.dumps({
        "IL_MESSAGE_TYPE": "Info", "IL_MESSAGE": f"old {n}", "IL_DESCRIPTION": f"old {n}"}), "output", n)
        for n in range(1, count + 1)])
    opened.close()


def test_a_helpers_own_item_goes_first_and_an_old_backlog_costs_it_about_a_second(hub, capsys):
    mine = start(hub)
    old = start(hub, "INT-2")
    journal_backlog(hub, old, 300)
    hub.sandbox.set_faults(latency_ms=150)
    started = time.monotonic()
    done = add_log(hub, "-r", mine, "-m", "mine first")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert messages(hub, mine) == ["mine first"]
    # 300 records at 150 ms each, 8 to 16 at once, take 3 s or more: the helper spends about a
    # second of it (start-up, its own record, a second, the requests in flight then).
    assert took < 3.0, (took, len(hub.logs(old)))
    assert 0 < len(hub.logs(old)) < 300
    hub.sandbox.clear_faults()
    assert main(hub, capsys, "--replay")[0] == 0
    assert len(hub.logs(old)) == 300
