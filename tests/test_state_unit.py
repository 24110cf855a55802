"""hub.state as a state machine: which job a run hands out next (RunProgress.next_job), what a
result changes (finish), and the verdict (exit code and message) from what is still owed. Pure:
no journal, no network; a stand-in for the spool says whether raw output waits."""

from __future__ import annotations

import json

import pytest

from hub.state import (ItemState, JobKind, Origin, Outcome, ParseState, RecordRow, Result, RunProgress, RunRow,
                       Step, verdict)

NOW = 1000.0


class Spool:
    """What the planner asks of a spool: whether raw output waits to be parsed."""

    def __init__(self, unparsed=False):
        self.unparsed = unparsed

    def has_unparsed(self, next_chunk):
        return self.unparsed


def run_row(origin=Origin.WRAPPER, create=ItemState.PENDING, last_run=ItemState.PENDING, final=None,
            output_open=False, ended=True) -> RunRow:
    return RunRow(run_key="R", installation="i", integration_key="INT-1", origin=origin, settings={},
                  started_at=0.0, integration_id=11,
                  create=Step({"IR_STATUS": "Running"}, create),
                  last_run=Step({"INT_LAST_RUN": "t"}, last_run),
                  final=Step({"IR_STATUS": "Executed without Warnings"}, final) if final is not None else Step(),
                  output_open=output_open, parse=ParseState(ended=ended))


def record(seq, state=ItemState.PENDING, file_path=None) -> RecordRow:
    return RecordRow(f"R-{seq:06d}", "R", json.dumps({"IL_DESCRIPTION": f"line {seq}"}), "output", seq, file_path,
                     state)


def progress(row=None, records=(), unparsed=False, sync=False, spool=True) -> RunProgress:
    return RunProgress(row or run_row(), list(records), Spool(unparsed) if spool else None, sync=sync)


def jobs(run, network=True, wanted=8, now=NOW):
    """Every job the run hands out now, until it has none (none of them finished)."""
    out = []
    while True:
        job = run.next_job(now, network, wanted)
        if job is None:
            return out
        out.append(job)


def kinds(found):
    return [job.kind for job in found]


def done(run, job, outcome=Outcome.DELIVERED, **result):
    run.finish(job, Result(outcome, **result))


# -- what goes first --------------------------------------------------------------------------------

def test_the_run_create_goes_first_with_last_run_beside_it_and_nothing_else():
    run = progress(records=[record(1)], unparsed=True)
    assert kinds(jobs(run)) == [JobKind.LAST_RUN, JobKind.CREATE_RUN]


def test_records_and_parsing_wait_for_the_create():
    run = progress(records=[record(1)], unparsed=True)
    create = [j for j in jobs(run) if j.kind is JobKind.CREATE_RUN][0]
    assert jobs(run) == []
    done(run, create, trackor_id=5)
    assert run.row.trackor_id == 5 and run.row.create.state is ItemState.DELIVERED
    assert kinds(jobs(run)) == [JobKind.CREATE_RECORD, JobKind.PARSE]


def test_without_network_only_parsing_goes_on():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), [record(1)], unparsed=True)
    assert kinds(jobs(run, network=False)) == [JobKind.PARSE]


def test_records_go_oldest_first():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED),
                   [record(n) for n in (1, 2, 3)])
    assert [j.record.seq for j in jobs(run)] == [1, 2, 3]


def test_parsing_stops_while_enough_records_wait():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED),
                   [record(n) for n in (1, 2, 3)], unparsed=True)
    assert JobKind.PARSE not in kinds(jobs(run, wanted=2))
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED),
                   [record(n) for n in (1, 2, 3)], unparsed=True)
    assert JobKind.PARSE in kinds(jobs(run, wanted=8))


def test_records_backing_off_hold_parsing_back_too():
    # While OneVizion fails, output stays raw in the spool rather than growing as records in memory.
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED),
                   [record(n) for n in (1, 2, 3)], unparsed=True)
    for job in [j for j in jobs(run, wanted=0) if j.kind is JobKind.CREATE_RECORD]:
        run.retry[job.token].not_before = NOW + 10     # the engine's backoff
        done(run, job, Outcome.RETRY)
    assert len(run.waiting) == 3 and not run.ready
    assert JobKind.PARSE not in kinds(jobs(run, wanted=3))
    assert JobKind.PARSE in kinds(jobs(run, wanted=4))


def test_a_created_records_file_goes_after_the_records_waiting():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED),
                   [record(1, ItemState.CREATED, "/tmp/a"), record(2)])
    assert kinds(jobs(run)) == [JobKind.CREATE_RECORD, JobKind.UPLOAD_FILE]


# -- the run's file: the latest printed wins --------------------------------------------------------

def delivered_run(**changes):
    row = run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED, final=ItemState.PENDING)
    for name, value in changes.items():
        setattr(row, name, value)
    return progress(row)


def test_the_run_file_goes_after_the_records_one_at_a_time():
    run = delivered_run()
    run.want_run_file(3, "/tmp/c")
    assert kinds(jobs(run)) == [JobKind.RUN_FILE]


def test_a_later_printed_file_wins_whatever_order_the_uploads_finish_in():
    run = delivered_run()
    run.want_run_file(3, "/tmp/first")
    [upload] = jobs(run)
    run.want_run_file(7, "/tmp/later")
    run.want_run_file(5, "/tmp/older")           # printed earlier than the one wanted: ignored
    done(run, upload)                            # the first upload ends after the later file was printed
    assert run.row.run_file == (7, "/tmp/later") and run.row.run_file_state is ItemState.PENDING
    [second] = jobs(run)
    assert second.run_file == (7, "/tmp/later")
    done(run, second)
    assert run.row.run_file_state is ItemState.DELIVERED
    assert kinds(jobs(run)) == [JobKind.FINAL]


def test_a_refused_run_file_is_kept_and_a_newer_one_is_owed_again():
    run = delivered_run()
    run.want_run_file(3, "/tmp/a")
    [upload] = jobs(run)
    done(run, upload, Outcome.REFUSED, answer="413: too large")
    assert run.row.run_file_state is ItemState.REFUSED and run.refused_items() == ["run file /tmp/a: 413: too large"]
    run.want_run_file(4, "/tmp/b")
    assert run.row.run_file_state is ItemState.PENDING and run.row.run_file_answer is None


# -- the final status: only after everything, never blocked by refusals ------------------------------

@pytest.mark.parametrize("what", ["output open", "not parsed to the end", "raw output waits", "a record owed",
                                  "a file owed", "the run file owed", "something in flight"])
def test_the_final_status_waits_for_everything_else(what):
    row = run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED, final=ItemState.PENDING,
                  output_open=what == "output open", ended=what != "not parsed to the end")
    records = {"a record owed": [record(1)], "a file owed": [record(1, ItemState.CREATED, "/tmp/f")]}.get(what, [])
    run = progress(row, records, unparsed=what == "raw output waits")
    if what == "the run file owed":
        run.want_run_file(1, "/tmp/f")
    if what == "something in flight":
        run.in_flight.add("R-000009")
    assert JobKind.FINAL not in kinds(jobs(run, wanted=0))
    assert not run.complete()


def test_the_final_status_goes_last_and_completes_the_run():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED, final=ItemState.PENDING),
                   [record(1)])
    [create] = jobs(run)
    assert create.kind is JobKind.CREATE_RECORD
    done(run, create)
    [final] = jobs(run)
    assert final.kind is JobKind.FINAL and not run.complete()
    done(run, final)
    assert run.final_sent and run.complete() and run.settled() and run.delivered == 1


def test_refused_items_never_block_the_final_status():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.REFUSED, final=ItemState.PENDING),
                   [record(1, ItemState.REFUSED)])
    run.row.run_file, run.row.run_file_state = (1, "/tmp/f"), ItemState.REFUSED
    assert kinds(jobs(run)) == [JobKind.FINAL]


def test_a_wrapper_run_without_its_final_status_is_not_complete():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED))
    assert jobs(run) == [] and not run.complete()
    run = progress(run_row(Origin.CONTROLLER, create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), spool=False)
    assert run.complete()


# -- a refused create --------------------------------------------------------------------------------

def test_a_refused_create_blocks_the_runs_records_and_final_but_not_last_run():
    run = progress(run_row(create=ItemState.REFUSED, final=ItemState.PENDING), [record(1)], unparsed=True)
    [last_run] = jobs(run)
    assert last_run.kind is JobKind.LAST_RUN
    assert run.blocked() and not run.complete() and not run.settled()   # Last Run in flight
    done(run, last_run)
    assert run.settled() and not run.complete() and jobs(run) == []


def test_a_create_refused_now_is_said_and_kept():
    run = progress(run_row(last_run=ItemState.DELIVERED), [record(1)])
    [create] = jobs(run)
    done(run, create, Outcome.REFUSED, answer="422: IR_STATUS")
    assert run.row.create.state is ItemState.REFUSED and run.row.create.answer == "422: IR_STATUS"
    assert run.refusals == ["create run: 422: IR_STATUS"] and run.refused_items() == ["run create: 422: IR_STATUS"]
    assert jobs(run) == []


# -- retries, backoff, stop ----------------------------------------------------------------------------

def test_a_record_to_retry_waits_until_its_time_then_goes_first():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), [record(1), record(2)])
    first, second = jobs(run)
    run.retry[first.token].not_before = NOW + 5
    done(run, first, Outcome.RETRY)
    done(run, second)
    assert jobs(run, now=NOW + 4.9) == [] and run.next_wake() == NOW + 5
    [again] = jobs(run, now=NOW + 5)
    assert again.record.seq == 1


def test_a_record_to_retry_at_once_is_ready_again():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), [record(1)])
    [job] = jobs(run)
    done(run, job, Outcome.RETRY)
    assert [j.record.seq for j in jobs(run)] == [1]


def test_stop_puts_the_item_back_for_the_next_invocation():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), [record(1)])
    [job] = jobs(run)
    run.retry[job.token].not_before = NOW + 60
    done(run, job, Outcome.STOP)
    assert run.records["R-000001"].state is ItemState.PENDING and list(run.ready) == ["R-000001"]


def test_a_run_item_backing_off_is_not_handed_out_before_its_time():
    run = progress(run_row(last_run=ItemState.DELIVERED))
    [create] = jobs(run)
    run.retry["create"].not_before = NOW + 2
    done(run, create, Outcome.RETRY)
    assert jobs(run, now=NOW + 1) == [] and run.next_wake() == NOW + 2
    assert kinds(jobs(run, now=NOW + 2)) == [JobKind.CREATE_RUN]


def test_a_record_created_whose_file_must_wait_backs_off_then_uploads():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), [record(1, file_path="/tmp/f")])
    [job] = jobs(run)
    run.retry[job.token].not_before = NOW + 3
    done(run, job, Outcome.CREATED, trackor_id=42)
    assert run.records["R-000001"].state is ItemState.CREATED and run.records["R-000001"].trackor_id == 42
    assert jobs(run, now=NOW + 1) == []
    [upload] = jobs(run, now=NOW + 3)
    assert upload.kind is JobKind.UPLOAD_FILE
    done(run, upload)
    # Delivered: out of memory (what is owed is what stays).
    assert upload.record.state is ItemState.DELIVERED and "R-000001" not in run.records and run.files_sent == 1


def test_a_record_refused_is_kept_with_its_answer():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), [record(1)])
    [job] = jobs(run)
    done(run, job, Outcome.REFUSED, answer="400: bad")
    assert run.refused_items() == ["record R-000001: 400: bad"] and run.owed_records() == 0
    assert run.delivered == 0


def test_a_skipped_file_counts_the_record_delivered_not_its_file():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), [record(1, file_path="/x")])
    [job] = jobs(run)
    done(run, job, Outcome.SKIPPED)
    assert job.record.state is ItemState.DELIVERED and "R-000001" not in run.records
    assert (run.delivered, run.files_sent) == (1, 0)


# -- adopted runs: SYNC first --------------------------------------------------------------------------

def test_an_adopted_run_first_asks_which_records_onevizion_has():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED, final=ItemState.PENDING),
                   [record(1), record(2, file_path="/tmp/f"), record(3)], sync=True)
    [sync] = jobs(run)
    assert sync.kind is JobKind.SYNC and jobs(run) == []
    first = run.records["R-000001"]
    done(run, sync, found={"R-000001", "R-000002"})
    assert first.state is ItemState.DELIVERED and "R-000001" not in run.records
    assert run.records["R-000002"].state is ItemState.CREATED      # it exists; its file is still owed
    assert kinds(jobs(run)) == [JobKind.CREATE_RECORD, JobKind.UPLOAD_FILE]


def test_a_failed_sync_is_asked_again():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), [record(1)], sync=True)
    [sync] = jobs(run)
    done(run, sync, Outcome.RETRY)
    assert kinds(jobs(run)) == [JobKind.SYNC]


def test_an_adopted_run_whose_create_is_owed_creates_before_any_sync():
    run = progress(run_row(last_run=ItemState.DELIVERED), [record(1)], sync=True)
    assert kinds(jobs(run)) == [JobKind.CREATE_RUN]


# -- --retry-refused ------------------------------------------------------------------------------------

def test_retry_refused_makes_every_refused_item_owed_again():
    row = run_row(create=ItemState.REFUSED, last_run=ItemState.REFUSED, final=ItemState.REFUSED)
    row.create.answer = "403: no"
    row.run_file, row.run_file_state = (1, "/tmp/f"), ItemState.REFUSED
    run = progress(row, [record(1, ItemState.REFUSED), record(2, ItemState.DELIVERED)])
    assert run.retry_refused() == 5
    assert run.refused_items() == [] and row.create.owed and row.create.answer is None
    assert list(run.ready) == ["R-000001"] and run.row.run_file_state is ItemState.PENDING
    assert run.retry_refused() == 0


# -- the verdict ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ok, stopped_by, refused, records, statuses, code", [
    (True, None, [], 0, 0, 0),
    (False, None, [], 0, 0, 1),
    (True, None, [], 3, 0, 75),
    (False, None, [], 0, 1, 75),
    (True, None, ["record R-1: 400: bad"], 0, 0, 6),
    (False, None, ["final status: 403: no"], 2, 1, 6),
    (True, 15, [], 0, 0, 143),
    (True, 15, ["record R-1: 400: bad"], 4, 1, 143),
])
def test_the_exit_code_comes_from_what_is_still_owed(ok, stopped_by, refused, records, statuses, code):
    assert verdict(ok, stopped_by, refused, records, statuses).exit_code == code


def test_nothing_owed_says_nothing():
    assert verdict(True, None, [], 0, 0).message is None
    assert verdict(False, None, [], 0, 0).message is None


def test_a_refusal_is_said_with_its_answer_and_where_to_look():
    message = verdict(True, None, ["record R-1: 400: bad", "record R-2: 400: bad"], 0, 0).message
    assert message == ("OneVizion refused 2 items (first: record R-1: 400: bad); kept in the journal as refused, "
                       "see --status")


@pytest.mark.parametrize("records, statuses, kwargs, said", [
    (1, 0, {}, "1 record waits in the journal (OneVizion did not confirm it in time); the next invocation or "
               "--replay delivers it"),
    (3, 1, {}, "3 records and the final status wait in the journal (OneVizion did not confirm them in time)"),
    (0, 1, {}, "the final status waits in the journal"),
    (0, 2, {}, "2 statuses wait in the journal"),
    (0, 2, {"status_names": ["the run's create", "Last Run"]}, "the run's create and Last Run wait in the journal"),
    (0, 1, {"status_names": ["the run's create"]}, "the run's create waits in the journal (OneVizion did not "
                                                   "confirm it in time); the next invocation or --replay delivers it"),
    (2, 0, {"credentials_refused": True}, "(OneVizion refused the credentials)"),
    (2, 1, {"blocked": True}, "wait in the journal (behind the refused run create)"),
])
def test_what_waits_is_said_with_why(records, statuses, kwargs, said):
    assert said in verdict(True, None, [], records, statuses, **kwargs).message


def test_blocked_records_are_not_promised_to_the_next_invocation():
    message = verdict(True, None, ["run create: 422: x"], 2, 1, blocked=True).message
    assert "next invocation" not in message and message.startswith("OneVizion refused 1 item")


def test_a_record_added_twice_is_kept_once():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED))
    run.add_record(record(1))
    run.add_record(record(1, ItemState.REFUSED))
    assert list(run.ready) == ["R-000001"] and run.records["R-000001"].state is ItemState.PENDING


def test_nothing_else_of_a_run_goes_while_its_sync_is_asked():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.PENDING), [record(1)], unparsed=True,
                   sync=True)
    [sync] = jobs(run)
    assert sync.kind is JobKind.SYNC
    assert jobs(run, network=False) == [] and jobs(run) == []


def test_a_sync_finding_a_record_already_in_flight_leaves_it_to_its_job():
    run = progress(run_row(create=ItemState.DELIVERED, last_run=ItemState.DELIVERED), [record(1)], sync=True)
    [sync] = jobs(run)
    run.ready.clear()                      # as if its create were in flight
    first = run.records["R-000001"]
    done(run, sync, found={"R-000001"})
    assert first.state is ItemState.DELIVERED and not run.needs_sync
