"""Every answer counts (SPEC §5): for each kind of call the wrapper makes, each row of the
answer table, given by a sandbox rule over real HTTP, to a real child's run. Each test shows
that nothing is lost (every line in OneVizion, in order, or in the journal), nothing is
duplicated (Log records counted by key and by text), the exit code, and no traceback.

The rows, as rules (sandbox/rules.py): TRANSIENT are retried until delivered; AMBIGUOUS, a
failure after the server committed, are read back by exact key before any resend; REFUSED
are quarantined (exit 6, --status, --replay --retry-refused, --discard); a 401 stops sending.
"""

from __future__ import annotations

import pytest

from tests.answer_table import (AMBIGUOUS, CALLS, REFUSED, SECRET, TRANSIENT, WHY, assert_no_traceback,
                                journal_refused, main, numbered, outcome_of, rule_used_up)
from tests.hubtest import fixture_command

CHILD_LINES = 8


def wrap(hub, capsys, name="Answers", *flags):
    """Run the wrapper in-process on a child that prints CHILD_LINES lines and a file's path."""
    return outcome_of(hub, capsys, name, CHILD_LINES, *flags)


def delivered_in_full(hub, out):
    """Every line in OneVizion once, in order, the file in its record and in the run, the run closed."""
    run = out.run()
    assert run is not None and run["IR_STATUS"] == "Executed without Warnings", run
    assert out.lines() == out.expected
    out.assert_no_duplicates()
    assert out.file_record()["IL_FILE"]["file_name"] == "report.txt"
    assert run["IR_FILE"]["file_name"] == "report.txt"
    [integration] = [i for i in hub.sandbox.trackors("Integration") if i["TRACKOR_KEY"] == out.key]
    assert integration["INT_LAST_RUN"] == run["IR_START"]


# -- good answers ----------------------------------------------------------------------------------

def test_good_answers_deliver_everything_and_leave_nothing_in_the_journal(hub, capsys):
    out = wrap(hub, capsys)
    assert (out.code, out.err) == (0, "")
    delivered_in_full(hub, out)
    assert (hub.journal_rows("runs"), hub.journal_rows("records"), hub.journal_holds_output()) == (0, 0, False)
    assert main(hub, capsys, "--status") == (0, "the journal owes this installation nothing\n")


# -- transient answers: retried until delivered -------------------------------------------------

@pytest.mark.parametrize("answer", TRANSIENT)
@pytest.mark.parametrize("call", CALLS)
def test_a_transient_answer_is_retried_and_everything_arrives_once(hub, capsys, monkeypatch, call, answer):
    monkeypatch.setenv("HUB_REQUEST_SECONDS", "1")
    hub.sandbox.add_rule(times=2, **CALLS[call], **TRANSIENT[answer])
    out = wrap(hub, capsys)
    assert out.code == 0, out.err
    assert rule_used_up(hub)
    delivered_in_full(hub, out)
    assert out.err == ""
    assert hub.journal_rows("runs") == 0


@pytest.mark.parametrize("call", CALLS)
def test_500_once_is_retried_and_delivered(hub, capsys, call):
    hub.sandbox.add_rule(times=1, status=500, body="Internal error", **CALLS[call])
    out = wrap(hub, capsys)
    assert (out.code, out.err) == (0, "")
    assert rule_used_up(hub)
    delivered_in_full(hub, out)


# -- ambiguous: the server committed, then the answer went wrong ---------------------------------

# A page answered to an update or an upload is refused (below): only a create is read back by key.
COMMITTED = [(call, answer) for call in ("run create", "record create", "file upload", "final status")
             for answer in AMBIGUOUS if answer != "HTML page" or call.endswith("create")]


@pytest.mark.parametrize("call, answer", COMMITTED)
def test_a_failure_after_the_server_committed_is_read_back_and_makes_no_duplicate(hub, capsys, monkeypatch, call,
                                                                                   answer):
    monkeypatch.setenv("HUB_REQUEST_SECONDS", "1")
    hub.sandbox.add_rule(times=1, after_commit=True, **CALLS[call], **AMBIGUOUS[answer])
    out = wrap(hub, capsys)
    assert (out.code, out.err) == (0, "")
    assert rule_used_up(hub)
    delivered_in_full(hub, out)
    assert len(hub.runs(out.key)) == 1


def test_a_record_committed_then_reset_is_found_by_its_exact_key_not_resent(hub, capsys):
    hub.sandbox.add_rule(times=1, after_commit=True, reset=True, **CALLS["record create"])
    hub.sandbox.reset_stats()
    out = wrap(hub, capsys)
    assert out.code == 0
    records = len(hub.logs(out.run()["TRACKOR_KEY"]))
    # Every record was created once: one create per record (the ruled one committed), none resent.
    assert hub.sandbox.stats()["create"] == records + 2   # + the run, + the Integration the test made
    out.assert_no_duplicates()


# -- 500 five times in a row: refused ----------------------------------------------------------

@pytest.mark.parametrize("call", CALLS)
def test_500_five_times_in_a_row_is_refused_and_kept(hub, capsys, call):
    one_item = dict(CALLS[call], body_contains="line 000003") if call == "record create" else CALLS[call]
    hub.sandbox.add_rule(times=5, status=500, body="ORA-20000: a rule refused it", **one_item)
    out = wrap(hub, capsys)
    assert out.code == 6, out.err
    assert rule_used_up(hub)
    out.assert_refusal_said_once()
    refused = journal_refused(hub)
    assert len(refused) == 1 and "500: ORA-20000: a rule refused it" in refused[0]
    out.assert_nothing_lost()
    # Once the installation takes it, --replay --retry-refused delivers it; nothing left behind.
    assert main(hub, capsys, "--replay", "--retry-refused")[0] == 0
    delivered_in_full(hub, out)
    assert hub.journal_rows("runs") == 0


# -- refused: quarantined ----------------------------------------------------------------------

@pytest.mark.parametrize("answer", REFUSED)
@pytest.mark.parametrize("call", CALLS)
def test_a_refused_item_is_quarantined_listed_left_by_replay_and_sent_by_retry_refused(hub, capsys, call, answer):
    hub.sandbox.add_rule(times=1, **CALLS[call], **REFUSED[answer])
    out = wrap(hub, capsys)
    assert out.code == 6, out.err
    assert rule_used_up(hub)
    out.assert_refusal_said_once()
    out.assert_nothing_lost()
    status, text = main(hub, capsys, "--status")
    assert status == 6
    [why] = [line for line in text.splitlines() if "refused:" in line]
    assert WHY[answer] in why, why
    assert SECRET not in text
    before = hub.sandbox.stats()["total"]
    code, said = main(hub, capsys, "--replay")
    assert code == 6 and "1 refused by OneVizion" in said
    assert hub.sandbox.stats()["total"] == before   # a plain replay leaves it alone: no request at all
    code, said = main(hub, capsys, "--replay", "--retry-refused")
    assert code == 0, said
    delivered_in_full(hub, out)
    assert main(hub, capsys, "--status")[0] == 0
    assert hub.journal_rows("runs") == 0


def test_refusals_are_said_in_one_line_per_run(hub, capsys):
    for name in ("First", "Second"):
        hub.add_integration(name)
    hub.sandbox.add_rule(status=403, body="Forbidden", **dict(CALLS["record create"], body_contains="refuse me"))
    child = fixture_command("says.py", "out:fine", "out:refuse me", "out:refuse me too")
    path = hub.integrations_file(*({"IntegrationName": name, "ExecutablePath": child} for name in ("First", "Second")))
    capsys.readouterr()
    assert hub.wrapper(path) == 6
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "error"]
    assert ["First: run" in lines[0], "Second: run" in lines[1]] == [True, True]
    assert all("OneVizion refused" in line and "(first: record" in line and "403: Forbidden" in line
               for line in lines)


def test_a_refused_run_create_holds_back_its_records_and_its_final_status(hub, capsys):
    hub.sandbox.add_rule(times=1, status=422, body="Unprocessable: IR_STATUS", **CALLS["run create"])
    out = wrap(hub, capsys)
    assert out.code == 6
    assert out.run() is None and hub.logs() == []
    out.assert_nothing_lost()
    status, text = main(hub, capsys, "--status")
    assert status == 6 and "its create was refused" in text and "422: Unprocessable: IR_STATUS" in text


def test_discard_drops_a_refused_record_for_good_and_an_unknown_key_is_exit_4(hub, capsys):
    hub.sandbox.add_rule(times=1, status=409, body="Conflict", **CALLS["record create"])
    out = wrap(hub, capsys)
    assert out.code == 6
    [record] = [r for r in out.journal_records() if r.state.name == "REFUSED"]
    assert main(hub, capsys, "--discard", "no-such-key")[0] == 4
    code, said = main(hub, capsys, "--discard", record.log_key)
    assert code == 0 and record.log_key in said
    assert main(hub, capsys, "--status")[0] == 0
    assert main(hub, capsys, "--replay", "--retry-refused")[0] == 0
    assert record.log_key not in [r["TRACKOR_KEY"] for r in hub.logs()]
    assert hub.journal_rows("records") == 0


def test_discard_of_a_run_drops_it_with_everything_it_owes(hub, capsys):
    hub.sandbox.add_rule(times=1, status=403, body="Forbidden", **CALLS["run create"])
    out = wrap(hub, capsys)
    assert out.code == 6
    [row] = out.journal_runs()
    code, said = main(hub, capsys, "--discard", row.run_key)
    assert code == 0 and "discarded run" in said
    assert (hub.journal_rows("runs"), hub.journal_rows("records")) == (0, 0)
    assert main(hub, capsys, "--status")[0] == 0


def test_a_refused_item_as_a_real_process_says_one_line_and_no_traceback(hub):
    key = hub.add_integration("Process")
    hub.sandbox.add_rule(times=1, status=400, body="Bad request: IL_MESSAGE_TYPE",
                         **dict(CALLS["record create"], body_contains="line 000003"))
    path = hub.integrations_file({"IntegrationName": "Process", "ExecutablePath": fixture_command(
        "says.py", *(f"out:{line}" for line in numbered(5)))})
    done = hub.script("IntegrationWrapper.py", "-i", path)
    assert done.returncode == 6
    assert_no_traceback(done.stderr)
    [line] = done.stderr.splitlines()
    assert "refused 1 item" in line and "400: Bad request: IL_MESSAGE_TYPE" in line and "--status" in line
    [run] = hub.runs(key)
    assert "line 000003" not in hub.lines(run["TRACKOR_KEY"]) and len(hub.lines(run["TRACKOR_KEY"])) == 4
    status = hub.script("IntegrationWrapper.py", "--status")
    assert status.returncode == 6 and "400: Bad request" in status.stdout and status.stderr == ""


# -- 401 in the middle of a run -------------------------------------------------------------------

@pytest.mark.parametrize("call", CALLS)
def test_401_mid_run_stops_sending_keeps_everything_and_says_so(hub, capsys, call):
    hub.sandbox.add_rule(status=401, body="User is temporarily locked", **CALLS[call])
    out = wrap(hub, capsys)
    assert out.code == 75, out.err
    assert "refused the credentials" in out.err and "nothing more is sent" in out.err
    assert_no_traceback(out.err)
    [rule] = hub.sandbox.rules()
    assert 1 <= rule["matched"] <= 8     # what was in flight at the 401, never a retry of it
    out.assert_nothing_lost()
    hub.sandbox.clear_rules()
    assert main(hub, capsys, "--replay")[0] == 0
    delivered_in_full(hub, out)


# -- the Integration lookup, before any child starts ------------------------------------------------

LOOKUP = dict(method="GET", path=r"^/api/v3/trackor_types/Integration/trackors$", query_contains="INT_NAME")


@pytest.mark.parametrize("answer", ["reset", "503", "429 with Retry-After", "cut short"])
def test_a_lookup_answered_transiently_twice_is_retried_and_the_run_goes_on(hub, capsys, answer):
    hub.sandbox.add_rule(times=2, **LOOKUP, **TRANSIENT[answer])
    out = wrap(hub, capsys)
    assert out.code == 0 and rule_used_up(hub)
    delivered_in_full(hub, out)


@pytest.mark.parametrize("answer, code, message", [
    ("reset", 3, "connection reset"),
    ("503", 3, "OneVizion answered 503"),
    ("401", 3, "refused the credentials in Passwords.json (401)"),
    ("403", 3, "lacks permission (403)"),
    ("400", 3, "OneVizion answered 400"),
    ("login redirect", 3, "redirected"),
    ("HTML 200", 3, "text/html, not JSON"),
    ("[] 200", 4, "no Integration named 'Answers'"),
])
def test_a_lookup_that_fails_starts_no_child_and_exits_with_its_code(hub, capsys, tmp_path, answer, code, message):
    rules = dict(TRANSIENT, **REFUSED, **{"401": dict(status=401, body="User is locked")})
    hub.sandbox.add_rule(**LOOKUP, **rules[answer])
    marker = tmp_path / "child-ran"
    key = hub.add_integration("Answers")
    path = hub.integrations_file({"IntegrationName": "Answers", "Shell": True, "ExecutablePath": f"touch {marker}"})
    assert hub.wrapper(path) == code
    err = capsys.readouterr().err
    assert message in err, err
    assert_no_traceback(err)
    assert not marker.exists() and hub.runs(key) == [] and hub.journal_rows("runs") == 0


def test_credentials_refused_cost_one_401_however_many_integrations(hub, capsys):
    # Accounts get locked after a few failed logins: the lookups must not each try.
    names = [f"Many{n}" for n in range(6)]
    for name in names:
        hub.add_integration(name)
    path = hub.integrations_file(*({"IntegrationName": name, "ExecutablePath": "true", "Shell": True}
                                   for name in names))
    hub.sandbox.add_rule(status=401, body="User is locked")
    assert hub.wrapper(path) == 3
    assert "refused the credentials" in capsys.readouterr().err
    assert hub.sandbox.rules()[0]["matched"] == 1


def test_a_lookup_gives_up_within_its_bound_against_a_trickling_server(hub, capsys, monkeypatch):
    """A server that trickles a byte a second: each attempt ends at the request's total deadline,
    so the lookup, retries included, ends within LOOKUP_ATTEMPTS deadlines and its backoffs."""
    import time
    from hub.retry import LOOKUP_ATTEMPTS
    monkeypatch.setenv("HUB_REQUEST_SECONDS", "1.5")
    hub.sandbox.add_rule(**LOOKUP, body_size=4000, trickle_bytes_per_s=1, content_type="application/json")
    started = time.monotonic()
    out = wrap(hub, capsys)
    took = time.monotonic() - started
    assert out.code == 3 and "did not answer in time" in out.err
    assert LOOKUP_ATTEMPTS * 1.5 <= took < LOOKUP_ATTEMPTS * 1.5 + 3
    assert hub.sandbox.rules()[0]["matched"] == LOOKUP_ATTEMPTS


# -- the read-back by key --------------------------------------------------------------------------

READ_BACK = dict(method="GET", path=r"^/api/v3/trackor_types/IntegrationLog/trackors$",
                 query_contains="-0000")   # a Log ID: the run's key, -, six digits


@pytest.mark.parametrize("answer", ["reset", "503", "500", "timeout", "cut short"])
def test_a_read_back_answered_transiently_is_tried_again_and_nothing_is_duplicated(hub, capsys, monkeypatch, answer):
    monkeypatch.setenv("HUB_REQUEST_SECONDS", "1")
    failure = TRANSIENT.get(answer) or dict(status=500, body="Internal error")
    hub.sandbox.add_rule(times=1, after_commit=True, reset=True, **CALLS["record create"])
    hub.sandbox.add_rule(times=6 if answer == "500" else 2, **READ_BACK, **failure)
    out = wrap(hub, capsys)
    assert (out.code, out.err) == (0, "")
    assert rule_used_up(hub)
    delivered_in_full(hub, out)


@pytest.mark.parametrize("answer", ["403", "HTML 200", "[] 200"])
def test_a_read_back_refused_once_lets_the_duplicate_key_decide(hub, capsys, answer):
    hub.sandbox.add_rule(times=1, after_commit=True, reset=True, **CALLS["record create"])
    hub.sandbox.add_rule(times=1, **READ_BACK, **REFUSED[answer])
    out = wrap(hub, capsys)
    assert (out.code, out.err) == (0, "")
    assert rule_used_up(hub)
    delivered_in_full(hub, out)


def test_a_read_back_always_refused_keeps_the_record_as_refused_never_twice_in_onevizion(hub, capsys):
    hub.sandbox.add_rule(times=1, after_commit=True, reset=True, **CALLS["record create"])
    hub.sandbox.add_rule(**READ_BACK, status=403, body="Forbidden")
    out = wrap(hub, capsys)
    assert out.code == 6
    out.assert_no_duplicates()
    out.assert_nothing_lost()
    hub.sandbox.clear_rules()
    assert main(hub, capsys, "--replay", "--retry-refused")[0] == 0
    delivered_in_full(hub, out)


# -- a body too large, bounds ------------------------------------------------------------------------

def test_an_answer_larger_than_a_megabyte_to_a_record_create_is_refused_not_read_whole(hub, capsys):
    hub.sandbox.add_rule(times=1, body_size=300_000_000, content_type="application/json", **CALLS["record create"])
    out = wrap(hub, capsys)
    assert out.code == 6
    assert "an answer larger than the hub reads" in " ".join(journal_refused(hub))
    out.assert_nothing_lost()
    assert main(hub, capsys, "--replay", "--retry-refused")[0] == 0
    delivered_in_full(hub, out)
