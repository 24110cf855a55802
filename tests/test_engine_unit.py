"""The delivery engine (hub.delivery.Engine) and the journal it writes, without sockets and
without sleeps: a scripted fake of hub.api.OneVizion (find/create/update/upload return or raise
CallFailed(Answer(...)) as the test's script says), a real Journal in tmp_path, an injected
clock and backoff. The engine runs its jobs on the test's thread (`run_jobs`), one at a time,
so every path is deterministic."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

from hub.answers import Answer, Kind, no_answer
from hub.api import CallFailed
from hub.delivery import Engine
from hub.journal import Conditions, Journal
from hub.records import RecordMaker
from hub.retry import Backoff, RetryPolicy, Throttle
from hub.spool import STDOUT, Spool
from hub.state import ItemState, JobKind, Origin, ParseState, RecordRow, RunProgress, RunRow, Step
from hub.uploads import UploadPolicy

INSTALLATION = "http://onevizion.test|hub.admin"


@pytest.fixture
def journal(tmp_path):
    said = []
    opened = Journal(str(tmp_path), INSTALLATION, Conditions(said.append, logging.getLogger("test")))
    opened.said = said
    yield opened
    opened.close()


def wrapper_row(key="INT-1-run", **changes) -> RunRow:
    row = RunRow(run_key=key, installation=INSTALLATION, integration_key="INT-1", origin=Origin.WRAPPER,
                 settings={}, started_at=1000.0, integration_id=11, last_activity=1000.0,
                 create=Step({"IR_STATUS": "Running"}, ItemState.PENDING),
                 last_run=Step({"INT_LAST_RUN": "now"}, ItemState.PENDING), output_open=True)
    for name, value in changes.items():
        setattr(row, name, value)
    return row


def record(run_key="INT-1-run", seq=1, **changes) -> RecordRow:
    key = f"{run_key}-{seq:06d}"
    made = RecordRow(key, run_key, json.dumps({"TRACKOR_KEY": key, "IL_DESCRIPTION": f"line {seq}"}), "output", seq)
    for name, value in changes.items():
        setattr(made, name, value)
    return made


# -- the journal ---------------------------------------------------------------------------------

def test_a_run_row_written_after_a_newer_parse_does_not_move_the_parse_back(journal):
    """A snapshot of the run row (the wrapper closing the run) submitted just after the parse job
    wrote its records and the end of the output, but taken before the parse job updated the row
    in memory, must not move the parse position back: the run would then wait for output that
    will never come, and its final status would never go out, in this or any later invocation."""
    row = wrapper_row()
    journal.put_run(row)
    ended = ParseState(next_chunk=3, next_seq=9, ended=True)
    journal.put_records(row.run_key, [record(seq=8)], ended, last_activity=1005.0)
    stale = wrapper_row(output_open=False, final=Step({"IR_STATUS": "Executed without Warnings"}, ItemState.PENDING))
    journal.put_run(stale)
    kept = journal.run(row.run_key)
    assert kept.parse == ended and kept.last_activity == 1005.0
    assert kept.final.fields == {"IR_STATUS": "Executed without Warnings"} and not kept.output_open


# -- a scripted OneVizion ------------------------------------------------------------------------

def failure(kind, status, text="", **flags) -> Answer:
    return Answer(kind, status, text, **flags)


E503 = failure(Kind.TRANSIENT, 503, "busy", ambiguous=True, throttle=True)
E500 = failure(Kind.SERVER_ERROR, 500, "ORA-20000", ambiguous=True)
RESET = no_answer("connection reset", sent=True)
E400 = failure(Kind.REFUSED, 400, "bad value")
DUPLICATE = failure(Kind.REFUSED, 400, "duplicate TRACKOR_KEY")
E403 = failure(Kind.REFUSED, 403, "forbidden")
E401 = failure(Kind.CREDENTIALS, 401, "locked")


class FakeOneVizion:
    """hub.api.OneVizion's calls over an in-memory store, with a script of what goes wrong.

    `script(call, *outcomes, when=...)`: the next calls of that kind (find, create, update, upload)
    that match `when(args)` get these outcomes in turn: an Answer (raised as CallFailed), an
    exception (raised as is), ("commit", Answer) (done, then the Answer raised), or a value
    (returned instead of the store's)."""

    host = "onevizion.test"

    def __init__(self, generated_keys=()):
        self.trackors = {}            # key -> {"TRACKOR_ID", "TRACKOR_KEY", "type", "parent", "fields"}
        self.files = {}               # (trackor id, field) -> file name
        self.calls = []               # (call, args) in order
        self.scripts = []
        self.generated = set(generated_keys)
        self.next_id = 100

    def script(self, call, *outcomes, when=lambda args: True):
        self.scripts.append([call, list(outcomes), when])

    def _scripted(self, call, args):
        for entry in self.scripts:
            if entry[0] == call and entry[1] and entry[2](args):
                return entry[1].pop(0)
        return None

    def _run(self, call, args, do):
        self.calls.append((call, args))
        outcome = self._scripted(call, args)
        if callable(outcome) and not isinstance(outcome, BaseException):
            outcome = outcome()           # e.g. a hung server, or a file that changes meanwhile
        if isinstance(outcome, tuple) and outcome[0] == "commit":
            do()
            outcome = outcome[1]
        if isinstance(outcome, Answer):
            raise CallFailed(outcome, call)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is not None:
            return outcome
        return do()

    def count(self, call, when=lambda args: True):
        return sum(1 for c, args in self.calls if c == call and when(args))

    # -- the calls ---------------------------------------------------------------------------------

    def find(self, trackor_type, filters, fields=(), sort=None, page=None, per_page=None, seconds=None):
        args = dict(type=trackor_type, filters=dict(filters), page=page)

        def do():
            found = []
            for row in self.trackors.values():
                if row["type"] != trackor_type:
                    continue
                ok = True
                for name, value in filters.items():
                    assert value.startswith('"') and value.endswith('"'), f"{name}={value} is not exact"
                    wanted = value[1:-1]
                    have = row["parent"] if "." in name else row["TRACKOR_KEY"]
                    ok = ok and have == wanted
                if ok:
                    found.append({"TRACKOR_ID": row["TRACKOR_ID"], "TRACKOR_KEY": row["TRACKOR_KEY"]})
            return found[((page or 1) - 1) * (per_page or 10 ** 9):][:per_page or None]
        return self._run("find", args, do)

    def create(self, trackor_type, fields, parents=(), fields_json=None):
        fields = dict(fields, **json.loads(fields_json or "{}"))
        [(parent_type, parent)] = list(parents) or [(None, None)]
        args = dict(type=trackor_type, key=fields.get("TRACKOR_KEY"), parent=parent, fields=fields)

        def do():
            key = fields["TRACKOR_KEY"]
            if key in self.trackors:
                raise CallFailed(DUPLICATE, "create")
            self.next_id += 1
            given = f"GEN-{self.next_id}" if trackor_type in self.generated else key
            self.trackors[key] = {"TRACKOR_ID": self.next_id, "TRACKOR_KEY": given, "type": trackor_type,
                                  "parent": parent, "fields": fields}
            if given != key:
                self.trackors[given] = self.trackors.pop(key)
            return {"TRACKOR_ID": self.next_id, "TRACKOR_KEY": given}
        return self._run("create", args, do)

    def update(self, trackor_id, fields):
        args = dict(id=trackor_id, fields=dict(fields))

        def do():
            for row in self.trackors.values():
                if row["TRACKOR_ID"] == trackor_id:
                    row["fields"].update(fields)
            return {"TRACKOR_ID": trackor_id}
        return self._run("update", args, do)

    def upload(self, trackor_id, field, file_name, body):
        args = dict(id=trackor_id, field=field, name=file_name)

        def do():
            data = b"".join(body)
            self.files[(trackor_id, field)] = (file_name, len(data))
            return 7
        return self._run("upload", args, do)

    # -- what arrived -------------------------------------------------------------------------------

    def of_type(self, trackor_type):
        return sorted((r for r in self.trackors.values() if r["type"] == trackor_type), key=lambda r: r["TRACKOR_ID"])

    def lines(self, run_key):
        return [line for r in self.of_type("IntegrationLog") if r["parent"] == run_key
                for line in r["fields"]["IL_DESCRIPTION"].split("\n")]


# -- an engine on the test's fake ------------------------------------------------------------------

class Said(list):
    def __call__(self, text):
        self.append(text)


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.DEBUG, logger="engine-test")
    return logging.getLogger("engine-test")


@pytest.fixture
def make_engine(journal, log):
    engines = []

    def make(api, workers=1, **kwargs):
        engine = Engine(journal, api, log, Said(), RetryPolicy(Backoff(base=0.0, cap=0.0)), Throttle(start=4),
                        workers=workers, **kwargs)
        engines.append(engine)
        return engine
    yield make
    for engine in engines:
        engine.stop(patience=1.0)


def wrapper_run(journal, tmp_path, lines=("a", "b", "c"), files=(), key="INT-1-run", **changes):
    """A wrapper's run whose child has ended: its create, Last Run and final status owed, its
    output in a real spool."""
    row = wrapper_row(key, output_open=False, final=Step({"IR_STATUS": "Executed without Warnings"},
                                                         ItemState.PENDING), **changes)
    if files:
        row.settings = {"cwd": str(tmp_path), "uploads": UploadPolicy.build(["/"], str(tmp_path), [],
                                                                            str(tmp_path / "log"), 1000).as_dict()}
    journal.put_run(row)
    spool = Spool(str(tmp_path / "spool" / key))
    text = "".join(f"{line}\n" for line in list(lines) + list(files))
    spool.append(STDOUT, text.encode(), time.time())
    spool.end()
    return RunProgress(row, [], spool)


def deliver(engine, *runs, idle=5.0):
    """Add the runs, wait until they are settled, stop the workers (each finishes writing its last
    result to the journal) and flush the journal. True when everything was delivered."""
    for run in runs:
        engine.add(run)
    done = engine.wait([r.key for r in runs], idle)
    engine.stop(patience=2.0)
    engine.journal.flush()
    return done


def owed_in_journal(journal, run_key="INT-1-run"):
    return {r.log_key: r.state for r in journal.records(run_key)}


def test_everything_delivered_leaves_the_journal(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    run = wrapper_run(journal, tmp_path)
    assert deliver(make_engine(api), run)
    assert api.lines("INT-1-run") == ["a", "b", "c"]
    assert api.of_type("IntegrationRun")[0]["fields"]["IR_STATUS"] == "Executed without Warnings"
    assert api.count("update", lambda a: a["id"] == 11) == 1          # Last Run on the Integration
    journal.flush()
    assert journal.runs() == [] and journal.records("INT-1-run") == []
    assert run.final_sent and run.delivered >= 1


def test_a_refused_record_is_kept_with_its_answer_and_the_final_status_still_goes(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("create", E400, when=lambda a: a["type"] == "IntegrationLog")
    run = wrapper_run(journal, tmp_path, lines=["only"])
    deliver(make_engine(api), run)
    journal.flush()
    [kept] = journal.records("INT-1-run")
    assert kept.state is ItemState.REFUSED and kept.answer == "400: bad value"
    assert api.of_type("IntegrationRun")[0]["fields"]["IR_STATUS"] == "Executed without Warnings"
    assert [r.run_key for r in journal.runs()] == ["INT-1-run"]   # kept for --retry-refused or --discard
    assert run.refused_items() == ["record INT-1-run-000001: 400: bad value"]


def test_401_stops_all_sending_and_everything_stays_in_the_journal(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("create", E401, when=lambda a: a["type"] == "IntegrationLog")
    engine = make_engine(api)
    run = wrapper_run(journal, tmp_path, lines=["a", "b"])
    assert not deliver(engine, run)
    calls = len(api.calls)
    assert engine.halted and "refused the credentials" in engine.halted
    assert len(engine.say) == 1 and "nothing more is sent by this invocation" in engine.say[0]
    engine.wake()
    assert engine.wait([run.key], 0.2) is False and len(api.calls) == calls   # no more requests
    journal.flush()
    assert set(owed_in_journal(journal).values()) == {ItemState.PENDING}
    assert journal.run("INT-1-run").final.owed


def test_a_job_that_raises_fails_alone_and_the_worker_goes_on(journal, tmp_path, make_engine, caplog):
    api = FakeOneVizion()
    api.script("create", RuntimeError("boom"), when=lambda a: a["type"] == "IntegrationLog")
    engine = make_engine(api, workers=1)
    run = wrapper_run(journal, tmp_path)
    assert deliver(engine, run)
    assert engine.internal_errors == 1 and api.lines("INT-1-run") == ["a", "b", "c"]
    assert "create record failed with an internal error" in caplog.text and "RuntimeError: boom" in caplog.text
    assert engine.say == []


def test_a_planning_or_bookkeeping_fault_does_not_end_the_workers(journal, tmp_path, make_engine, caplog):
    engine = make_engine(FakeOneVizion(), workers=1)
    faults = {"_plan": 1, "finish": 1}
    plan = engine._plan

    def failing_plan():
        if faults["_plan"]:
            faults["_plan"] -= 1
            raise RuntimeError("plan bug")
        return plan()
    engine._plan = failing_plan
    run = wrapper_run(journal, tmp_path)
    finish = run.finish

    def failing_finish(job, result):
        finish(job, result)
        if faults["finish"] and job.kind is JobKind.PARSE:
            faults["finish"] -= 1
            raise RuntimeError("finish bug")
    run.finish = failing_finish
    assert deliver(engine, run)           # one worker: it outlived both faults
    assert faults == {"_plan": 0, "finish": 0} and engine.internal_errors == 2
    assert engine.api.lines("INT-1-run") == ["a", "b", "c"]
    assert "could not plan its next job" in caplog.text and "could not be applied" in caplog.text


def test_a_job_that_keeps_raising_is_refused_with_what_it_raised(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("update", *[KeyError("IR_FINISH")] * 5, when=lambda a: "IR_STATUS" in a["fields"])
    run = wrapper_run(journal, tmp_path)
    deliver(make_engine(api), run)
    assert run.row.final.refused and run.row.final.answer == "no answer: internal error: KeyError: 'IR_FINISH'"
    assert api.lines("INT-1-run") == ["a", "b", "c"]


def test_a_parse_that_raises_is_said_once_and_the_output_goes_as_plain_text(journal, tmp_path, make_engine,
                                                                            monkeypatch):
    api = FakeOneVizion()
    monkeypatch.setattr(RecordMaker, "feed", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad state")))
    engine = make_engine(api)
    run = wrapper_run(journal, tmp_path)
    assert deliver(engine, run, idle=1.0)
    assert len(engine.say) == 1 and "could not be parsed (ValueError: bad state)" in engine.say[0]
    assert run.row.final.state is ItemState.DELIVERED             # the final status still goes
    assert not run.output_pending() and run.owed_records() == 0    # and nothing of the output is held back
    delivered = "\n".join(api.lines("INT-1-run"))
    assert all(line in delivered for line in ("a", "b", "c"))
    assert journal.runs() == []


# -- idempotent creates -------------------------------------------------------------------------------

def test_a_create_that_landed_before_its_answer_was_lost_is_read_back_not_sent_again(journal, tmp_path,
                                                                                    make_engine):
    api = FakeOneVizion()
    api.script("create", ("commit", RESET), when=lambda a: a["key"] == "INT-1-run-000001")
    run = wrapper_run(journal, tmp_path, lines=["a"])
    assert deliver(make_engine(api), run)
    assert api.count("create", lambda a: a["key"] == "INT-1-run-000001") == 1
    assert api.count("find", lambda a: a["filters"] == {"TRACKOR_KEY": '"INT-1-run-000001"'}) == 1
    assert api.lines("INT-1-run") == ["a"]


def test_a_run_create_that_landed_is_read_back_too(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("create", ("commit", E500), when=lambda a: a["type"] == "IntegrationRun")
    run = wrapper_run(journal, tmp_path, lines=["a"])
    assert deliver(make_engine(api), run)
    assert len(api.of_type("IntegrationRun")) == 1 and run.row.trackor_id == api.of_type("IntegrationRun")[0][
        "TRACKOR_ID"]


def test_a_duplicate_key_refusal_means_an_earlier_attempt_landed(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("create", ("commit", no_answer("connection refused", sent=False)),
               when=lambda a: a["type"] == "IntegrationLog")   # not ambiguous: sent again, refused as a duplicate
    run = wrapper_run(journal, tmp_path, lines=["a"])
    assert deliver(make_engine(api), run)
    assert api.count("create", lambda a: a["type"] == "IntegrationLog") == 2 and api.lines("INT-1-run") == ["a"]
    journal.flush()
    assert journal.records("INT-1-run") == []


def test_500s_to_the_read_back_never_refuse_the_item(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("create", ("commit", RESET), when=lambda a: a["type"] == "IntegrationLog")
    api.script("find", *[E500] * 8, when=lambda a: a["type"] == "IntegrationLog")
    run = wrapper_run(journal, tmp_path, lines=["a"])
    assert deliver(make_engine(api), run)
    assert api.lines("INT-1-run") == ["a"] and not run.refused_items()


def test_a_read_back_that_fails_transiently_is_retried(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("create", ("commit", RESET), when=lambda a: a["type"] == "IntegrationLog")
    api.script("find", E503, E503, when=lambda a: a["type"] == "IntegrationLog")
    run = wrapper_run(journal, tmp_path, lines=["a"])
    assert deliver(make_engine(api), run)
    assert api.count("create", lambda a: a["type"] == "IntegrationLog") == 1


def test_a_refused_read_back_lets_the_creates_own_answer_decide(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("create", ("commit", RESET), when=lambda a: a["type"] == "IntegrationLog")
    api.script("find", *[E403] * 3, when=lambda a: a["type"] == "IntegrationLog")
    run = wrapper_run(journal, tmp_path, lines=["a"])
    deliver(make_engine(api), run)
    # The resend is refused as a duplicate, its read-back refused too: kept as refused, never twice.
    assert run.refused_items() == ["record INT-1-run-000001: 400: duplicate TRACKOR_KEY"]
    assert api.lines("INT-1-run") == ["a"]


def test_500_five_times_in_a_row_refuses_the_item(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("create", *[E500] * 5, when=lambda a: a["type"] == "IntegrationLog")
    run = wrapper_run(journal, tmp_path, lines=["a"])
    deliver(make_engine(api), run)
    assert run.refused_items() == ["record INT-1-run-000001: 500: ORA-20000"]
    assert api.count("find", lambda a: a["type"] == "IntegrationLog") == 4   # read back before each resend


def test_500_four_times_then_good_is_delivered(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("create", *[E500] * 4, when=lambda a: a["type"] == "IntegrationLog")
    run = wrapper_run(journal, tmp_path, lines=["a"])
    assert deliver(make_engine(api), run)
    assert api.lines("INT-1-run") == ["a"]


# -- files --------------------------------------------------------------------------------------------

def with_file(tmp_path, name="report.txt", size=10):
    path = tmp_path / name
    path.write_bytes(b"x" * size)
    return str(path)


def test_a_record_whose_upload_must_wait_is_kept_as_created_then_its_file_goes(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    path = with_file(tmp_path)
    api.script("upload", E503, when=lambda a: a["field"] == "IL_FILE")
    states = []
    original = journal.set_record
    journal.set_record = lambda record: (states.append((record.state, record.trackor_id)), original(record))
    run = wrapper_run(journal, tmp_path, lines=["a"], files=[path])
    assert deliver(make_engine(api), run)
    [file_record] = [r for r in api.of_type("IntegrationLog") if r["fields"]["IL_DESCRIPTION"] == path]
    assert states == [(ItemState.CREATED, file_record["TRACKOR_ID"])]
    assert api.files[(file_record["TRACKOR_ID"], "IL_FILE")][0] == "report.txt"
    assert api.count("create", lambda a: a["key"] == file_record["TRACKOR_KEY"]) == 1
    journal.flush()
    assert journal.runs() == []


@pytest.mark.parametrize("answer, state", [(E403, ItemState.REFUSED), (E401, ItemState.CREATED)])
def test_a_created_records_upload_refused_or_stopped_keeps_its_trackor(journal, tmp_path, make_engine, answer,
                                                                       state):
    api = FakeOneVizion()
    path = with_file(tmp_path)
    api.script("upload", answer, when=lambda a: a["field"] == "IL_FILE")
    run = wrapper_run(journal, tmp_path, lines=[], files=[path])
    deliver(make_engine(api), run)
    journal.flush()
    [kept] = journal.records("INT-1-run")
    [created] = api.of_type("IntegrationLog")
    assert (kept.state, kept.trackor_id) == (state, created["TRACKOR_ID"])


def test_a_file_grown_too_large_by_delivery_becomes_a_warning_and_the_runs_file_is_not_sent(journal, tmp_path,
                                                                                             make_engine):
    api = FakeOneVizion()
    small, large = with_file(tmp_path, "small.txt", 10), with_file(tmp_path, "large.txt", 10)

    def grow():
        with open(large, "ab") as more:
            more.write(b"y" * 5000)          # over the 1000-byte limit by the time it is sent

    api.script("create", grow, when=lambda a: a["fields"].get("IL_DESCRIPTION") == small)
    run = wrapper_run(journal, tmp_path, lines=[], files=[small, large])
    assert deliver(make_engine(api), run)
    [small_record] = [r for r in api.of_type("IntegrationLog") if r["fields"]["IL_DESCRIPTION"] == small]
    [large_record] = [r for r in api.of_type("IntegrationLog") if r["fields"]["IL_DESCRIPTION"].startswith(large)]
    assert api.files[(small_record["TRACKOR_ID"], "IL_FILE")][0] == "small.txt"
    assert large_record["fields"]["IL_MESSAGE_TYPE"] == "Warning"
    assert "over the upload limit" in large_record["fields"]["IL_DESCRIPTION"]
    assert (large_record["TRACKOR_ID"], "IL_FILE") not in api.files
    run_id = api.of_type("IntegrationRun")[0]["TRACKOR_ID"]
    assert (run_id, "IR_FILE") not in api.files        # the latest printed is the one not uploaded


def test_the_runs_file_upload_refused_is_kept(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    path = with_file(tmp_path)
    api.script("upload", E403, when=lambda a: a["field"] == "IR_FILE")
    run = wrapper_run(journal, tmp_path, lines=[], files=[path])
    deliver(make_engine(api), run)
    assert run.refused_items() == [f"run file {path}: 403: forbidden"]
    assert run.row.final.state is ItemState.DELIVERED



@pytest.mark.parametrize("halted_on", ["IL_FILE", "IR_FILE"])
def test_a_printed_file_owed_to_the_run_is_in_the_journal_when_sending_stops(journal, tmp_path, make_engine,
                                                                             halted_on):
    """The parse that finds a printed file makes the run's File owed; that is in the journal with
    the records at once, not only when a later run-level item is written (a 401 may come first)."""
    api = FakeOneVizion()
    path = with_file(tmp_path)
    api.script("upload", E401, when=lambda a: a["field"] == halted_on)
    run = wrapper_run(journal, tmp_path, lines=["a"], files=[path])
    assert not deliver(make_engine(api), run)
    kept = journal.run("INT-1-run")
    assert kept.run_file == (2, path) and kept.run_file_state is ItemState.PENDING


# -- the final status and runs known by key ---------------------------------------------------------------

def known_run(journal, key="INT-1-known", trackor_id=None, final=True):
    row = RunRow(run_key=key, installation=INSTALLATION, integration_key="INT-1", origin=Origin.KNOWN, settings={},
                 started_at=1000.0, trackor_id=trackor_id,
                 final=Step({"IR_STATUS": "Executed with Warnings"}, ItemState.PENDING) if final else Step())
    journal.put_run(row)
    return RunProgress(row)


def a_run_in(api, key):
    return api.create("IntegrationRun", {}, [("Integration", "INT-1")], fields_json=json.dumps({"TRACKOR_KEY": key}))


def test_a_final_status_for_a_run_known_by_key_finds_its_trackor_id_first(journal, make_engine):
    api = FakeOneVizion()
    made = a_run_in(api, "INT-1-known")
    api.script("find", E503)
    run = known_run(journal)
    assert deliver(make_engine(api), run)
    assert run.row.trackor_id == made["TRACKOR_ID"]
    assert api.of_type("IntegrationRun")[0]["fields"]["IR_STATUS"] == "Executed with Warnings"


def test_a_final_status_for_a_run_onevizion_does_not_have_is_refused(journal, make_engine):
    api = FakeOneVizion()
    run = known_run(journal)
    deliver(make_engine(api), run)
    assert run.refused_items() == ["final status: 404: no IntegrationRun with key INT-1-known in OneVizion"]


def test_last_run_without_an_integration_id_is_skipped(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    run = wrapper_run(journal, tmp_path, integration_id=None)
    assert deliver(make_engine(api), run)
    assert api.count("update", lambda a: "INT_LAST_RUN" in a["fields"]) == 0


def test_last_run_refused_is_kept_and_blocks_nothing(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    api.script("update", E403, when=lambda a: "INT_LAST_RUN" in a["fields"])
    run = wrapper_run(journal, tmp_path)
    deliver(make_engine(api), run)
    assert run.refused_items() == ["Last Run: 403: forbidden"] and api.lines("INT-1-run") == ["a", "b", "c"]


def test_a_refused_run_create_holds_back_everything_but_last_run(journal, tmp_path, make_engine, caplog):
    api = FakeOneVizion()
    api.script("create", E400, when=lambda a: a["type"] == "IntegrationRun")
    run = wrapper_run(journal, tmp_path)
    assert not deliver(make_engine(api), run)
    assert run.blocked() and run.settled() and api.of_type("IntegrationLog") == []
    assert api.count("update", lambda a: "INT_LAST_RUN" in a["fields"]) == 1
    assert "OneVizion refused to create it: 400: bad value" in caplog.text


# -- generated keys ---------------------------------------------------------------------------------------

def test_a_create_answered_with_another_key_keeps_that_key_for_the_parents_and_says_so_once(journal, tmp_path,
                                                                                           make_engine, caplog):
    api = FakeOneVizion(generated_keys=["IntegrationRun", "IntegrationLog"])
    run = wrapper_run(journal, tmp_path)
    assert deliver(make_engine(api), run)
    [made] = api.of_type("IntegrationRun")
    assert run.row.remote_key == made["TRACKOR_KEY"] != "INT-1-run"
    assert {r["parent"] for r in api.of_type("IntegrationLog")} == {made["TRACKOR_KEY"]}
    said = [r.message for r in caplog.records if "generates keys" in r.message]
    assert len(said) == 2 and "IntegrationRun" in said[0] and "IntegrationLog" in said[1]


# -- adopted runs, helpers' records ------------------------------------------------------------------------

def test_an_adopted_run_asks_which_records_landed_and_sends_only_the_others(journal, make_engine):
    api = FakeOneVizion()
    a_run_in(api, "INT-1-run")
    landed = record(seq=1)
    api.create("IntegrationLog", {}, [("IntegrationRun", "INT-1-run")],
               fields_json=json.dumps(dict(json.loads(landed.fields_json), TRACKOR_KEY=landed.log_key)))
    row = wrapper_row(create=Step({}, ItemState.DELIVERED), last_run=Step({}, ItemState.DELIVERED),
                      final=Step({"IR_STATUS": "Executed with Warnings"}, ItemState.PENDING), output_open=False,
                      trackor_id=api.of_type("IntegrationRun")[0]["TRACKOR_ID"])
    journal.put_run(row)
    records = [landed, record(seq=2)]
    journal.put_records(row.run_key, records)
    api.script("find", E503, when=lambda a: "IntegrationRun.TRACKOR_KEY" in a["filters"])
    run = RunProgress(row, records, sync=True)
    assert deliver(make_engine(api), run)
    assert api.count("create", lambda a: a["key"] == landed.log_key) == 1     # only the test's own
    assert api.lines("INT-1-run") == ["line 1", "line 2"]
    journal.flush()
    assert journal.runs() == []


def until(engine, condition, seconds=5.0):
    """Wait (on the engine's own condition, no sleep) until `condition()` holds after a job."""
    with engine.lock:
        return engine.lock.wait_for(condition, timeout=seconds)


def test_a_record_a_helper_adds_to_a_run_being_delivered_is_picked_up(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    a_run_in(api, "INT-1-known")
    engine = make_engine(api)
    run = known_run(journal, final=False)
    engine.add(run)
    other = Journal(str(tmp_path), INSTALLATION, Conditions(lambda _: None, logging.getLogger("other")))
    helper = RecordRow("INT-1-known-Xabc", "INT-1-known", json.dumps({"TRACKOR_KEY": "INT-1-known-Xabc",
                                                                      "IL_DESCRIPTION": "from a helper"}), "helper")
    journal.flush()                                                     # its row, in the file for others to see
    assert other.add_helper_record(helper, run.row) is not None       # the run is in the journal already
    other.close()
    assert until(engine, lambda: api.lines("INT-1-known") == ["from a helper"])


def test_stop_does_not_wait_for_a_request_that_hangs(journal, make_engine):
    import threading
    api = FakeOneVizion()
    entered, release = threading.Event(), threading.Event()
    api.script("find", lambda: (entered.set(), release.wait(10), E503)[2])
    engine = make_engine(api)
    engine.add(known_run(journal))
    assert entered.wait(5)
    started = time.monotonic()
    engine.stop(patience=0.2)
    assert time.monotonic() - started < 1.0
    release.set()


# -- the journal's own faults, ownership, loose records -----------------------------------------------------

class Clock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def test_writes_wait_in_memory_while_the_journal_is_locked_and_go_in_order_after(tmp_path, log):
    import sqlite3
    said, clock = Said(), Clock()
    conditions = Conditions(said, log)
    opened = Journal(str(tmp_path), INSTALLATION, conditions, busy_timeout=0.05, clock=clock)
    holder = sqlite3.connect(opened.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    row = wrapper_row()
    opened.put_run(row)
    opened.put_records(row.run_key, [record(seq=1), record(seq=2)], ParseState(next_chunk=1, next_seq=3))
    opened.flush()                                      # the writer meets the lock: a condition, writes wait
    assert opened.waiting_writes() == 2 and opened.condition == "another process holds the journal locked"
    assert len(said) == 1 and said[0].startswith("warning: another process holds the journal locked")
    opened.drop_records(["INT-1-run-000001"])            # delivered meanwhile: it leaves the waiting write
    opened.set_record(record(seq=2, state=ItemState.REFUSED, answer="400: bad"))
    assert not opened.flush()                           # not tried again before a second has passed
    holder.execute("ROLLBACK")
    holder.close()
    clock.now += 1.0
    opened.tick()
    deadline = time.monotonic() + 5                     # the writer tries again on its own
    while opened.waiting_writes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert opened.waiting_writes() == 0 and opened.condition is None
    [kept] = opened.records(row.run_key)
    assert (kept.log_key, kept.state, kept.answer) == ("INT-1-run-000002", ItemState.REFUSED, "400: bad")
    assert opened.run(row.run_key).parse.next_chunk == 1
    [(what, since, until)] = conditions.since(0)
    assert what == "another process holds the journal locked" and until is not None
    opened.close()


def test_writes_that_never_got_in_are_said_in_the_log_when_the_journal_closes(tmp_path, log, caplog, monkeypatch):
    import sqlite3
    from hub import journal as journal_module
    monkeypatch.setattr(journal_module, "CLOSE_WAIT_SECONDS", 0.2)   # at exit it waits for a lock that far
    opened = Journal(str(tmp_path), INSTALLATION, Conditions(Said(), log), busy_timeout=0.05, clock=Clock())
    holder = sqlite3.connect(opened.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    opened.put_run(wrapper_row())
    opened.close()
    holder.close()
    assert "the journal could not take 1 writes before the hub exited" in caplog.text


def test_a_damaged_journal_is_set_aside_and_a_new_one_started(tmp_path, log):
    (tmp_path / "journal.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\x10\x00\x01\x01" + b"\x00" * 40)
    said = Said()
    opened = Journal(str(tmp_path), INSTALLATION, Conditions(said, log))
    assert opened.reset_count == 1 and os.path.exists(opened.set_aside)
    assert said == [f"error: the journal was damaged and was moved aside to {opened.set_aside}; a new one was "
                    f"started"]
    opened.put_run(wrapper_row())
    assert [r.run_key for r in opened.runs()] == ["INT-1-run"]
    opened.close()


@pytest.mark.parametrize("owed", [0, 2])
def test_a_first_version_journal_is_replaced_when_it_owes_nothing_else_kept_aside(tmp_path, log, owed):
    import sqlite3
    old = sqlite3.connect(str(tmp_path / "journal.sqlite3"))
    old.executescript("CREATE TABLE chunks(id); CREATE TABLE lines(state INTEGER); CREATE TABLE runs(final_done);"
                      "PRAGMA user_version=1;")
    old.executemany("INSERT INTO lines VALUES(?)", [(0,)] * owed + [(2,)])
    old.commit()
    old.close()
    said = Said()
    opened = Journal(str(tmp_path), INSTALLATION, Conditions(said, log))
    opened.put_run(wrapper_row())
    assert [r.run_key for r in opened.runs()] == ["INT-1-run"]
    kept = [n for n in os.listdir(tmp_path) if ".v1-" in n]
    if owed:
        assert kept and len(said) == 1 and f"still owes {owed} items" in said[0]
    else:
        assert kept == [] and said == []
    opened.close()


def test_a_helpers_record_comes_with_the_run_it_needs_in_one_transaction(journal):
    known = RunRow(run_key="INT-1-known", installation=INSTALLATION, integration_key="INT-1", origin=Origin.KNOWN,
                   settings={}, started_at=1.0, owner="helper-1")
    first = RecordRow("INT-1-known-Xa", "INT-1-known", "{}", "helper")
    assert journal.add_helper_record(first, known) is None          # the run was not there: `known` went in
    assert journal.run("INT-1-known").owner == "helper-1"
    second = RecordRow("INT-1-known-Xb", "INT-1-known", "{}", "helper")
    assert journal.add_helper_record(second, known).run_key == "INT-1-known"   # there now: its row comes back
    assert [r.log_key for r in journal.records("INT-1-known", origin="helper", owed_only=True)] == \
        ["INT-1-known-Xa", "INT-1-known-Xb"]


def test_a_record_without_its_run_told_is_resolved_once_or_refused(journal):
    first = journal.add_loose("INT-1", None, "Xa", 50.0, "{}", None)
    second = journal.add_loose("INT-1", "INT-1-hint", "Xb", 60.0, "{}", "/tmp/f")
    assert [(r["log_suffix"], r["hint_run"]) for r in journal.loose()] == [("Xa", None), ("Xb", "INT-1-hint")]
    known = RunRow(run_key="INT-1-then", installation=INSTALLATION, integration_key="INT-1", origin=Origin.KNOWN,
                   settings={}, started_at=50.0)
    resolved = RecordRow("INT-1-then-Xa", "INT-1-then", "{}", "helper")
    assert journal.resolve_loose(first, resolved, known)
    assert not journal.resolve_loose(first, resolved, known)          # another process resolved it first
    journal.refuse_loose(second, "no run of integration INT-1 was Running at 1970-01-01T00:01:00")
    journal.flush()
    assert journal.loose() == []
    [refused] = journal.loose(refused=True)
    assert refused["answer"].startswith("no run of integration INT-1")
    assert [r.log_key for r in journal.records("INT-1-then")] == ["INT-1-then-Xa"]
    journal.drop_loose(second)
    journal.flush()
    assert journal.loose(refused=True) == []


def test_a_run_is_claimed_by_one_process_only(journal):
    journal.put_run(wrapper_row(owner="gone-1"))
    assert journal.claim("INT-1-run", "gone-1", "me")
    assert not journal.claim("INT-1-run", "gone-1", "another")
    assert journal.run("INT-1-run").owner == "me"


def test_ownership_is_the_lock_file_its_process_holds(tmp_path):
    from hub.journal import Owner
    first, second = Owner(str(tmp_path)), Owner(str(tmp_path))
    assert second.alive(first.id) and first.alive(first.id)
    assert not second.alive(None) and not second.alive("elsewhere-123-abc")
    leftover = os.path.join(second.folder, "old-host-99-abcdef.lock")
    open(leftover, "w").close()                           # a lock file whose process is gone
    assert not second.alive("old-host-99-abcdef")
    second.forget("old-host-99-abcdef")
    second.forget(first.id)                               # a live one's is never removed
    assert not os.path.exists(leftover) and os.path.exists(first.path)
    first.close()
    assert not second.alive(first.id)
    second.close()


def test_rows_of_another_installation_are_only_counted(journal):
    journal.put_run(wrapper_row("INT-1-mine"))
    journal.put_run(wrapper_row("INT-1-theirs", installation="https://other.onevizion.com|someone"))
    assert [r.run_key for r in journal.runs()] == ["INT-1-mine"] and journal.run("INT-1-theirs") is None
    assert journal.other_installations() == 1
    assert {r.run_key for r in journal.runs(every_installation=True)} == {"INT-1-mine", "INT-1-theirs"}


def test_a_run_leaves_only_when_no_record_of_it_is_left_and_discard_takes_both(journal):
    journal.put_run(wrapper_row())
    journal.put_records("INT-1-run", [record(seq=1)])
    journal.drop_run("INT-1-run")
    assert journal.run("INT-1-run") is not None               # a helper may have added a record just now
    journal.discard_run("INT-1-run")
    assert journal.run("INT-1-run") is None and journal.records("INT-1-run") == []
    assert journal.size() > 0 and journal.data_version() >= 0


@pytest.mark.parametrize("error, condition", [
    ("database or disk is full", "the disk is full"),
    ("database is locked", "another process holds the journal locked"),
    ("attempt to write a readonly database", "the journal is read-only"),
    ("disk I/O error", "the disk reported an I/O error"),
    ("unable to open database file", "the journal cannot be opened"),
    ("no such table: runs", "the journal was changed by another version of the hub"),
    ("something else", "the journal cannot be written (something else)"),
])
def test_what_a_storage_error_means(error, condition):
    import sqlite3
    from hub.journal import condition_of
    assert condition_of(sqlite3.OperationalError(error)) == condition


@pytest.mark.parametrize("exc, condition", [
    (OSError(28, "No space left on device"), "the disk is full"),
    (OSError(30, "Read-only file system"), "the file system is read-only"),
    (OSError(13, "Permission denied"), "the log folder cannot be written"),
    (OSError(5, "Input/output error"), "the disk reported an I/O error"),
    (OSError(122, "Disk quota exceeded"), "the disk quota is exceeded"),
    (OSError(99, "Odd"), "the disk cannot be written (Odd)"),
])
def test_what_an_os_error_means(exc, condition):
    from hub.journal import condition_of
    assert condition_of(exc) == condition


def test_damage_is_not_a_condition_and_a_bug_is_neither():
    import sqlite3
    from hub.journal import condition_of, is_damage
    damaged = sqlite3.DatabaseError("database disk image is malformed")
    assert condition_of(damaged) is None and is_damage(damaged)
    assert condition_of(ValueError("a bug")) is None and not is_damage(ValueError("malformed"))


# -- more error paths of the engine ---------------------------------------------------------------------

def test_an_adopted_runs_sync_reads_every_page(journal, make_engine, monkeypatch):
    import hub.delivery
    monkeypatch.setattr(hub.delivery, "SYNC_PAGE", 1)
    api = FakeOneVizion()
    a_run_in(api, "INT-1-run")
    records = [record(seq=n) for n in (1, 2, 3)]
    for landed in records[:2]:
        api.create("IntegrationLog", {}, [("IntegrationRun", "INT-1-run")], fields_json=landed.fields_json)
    row = wrapper_row(create=Step({}, ItemState.DELIVERED), last_run=Step({}, ItemState.DELIVERED),
                      final=Step({"IR_STATUS": "Executed with Warnings"}, ItemState.PENDING), output_open=False)
    journal.put_run(row)
    journal.put_records(row.run_key, records)
    assert deliver(make_engine(api), RunProgress(row, records, sync=True))
    assert api.count("find", lambda a: "IntegrationRun.TRACKOR_KEY" in a["filters"]) == 3
    assert api.count("create", lambda a: a["type"] == "IntegrationLog") == 3   # two by the test, one resent
    assert journal.runs() == []


def test_a_file_gone_before_its_upload_is_logged_and_its_record_counts_delivered(journal, tmp_path, make_engine,
                                                                                  caplog):
    api = FakeOneVizion()
    a_run_in(api, "INT-1-known")
    gone = str(tmp_path / "gone.txt")
    created = record("INT-1-known", 1, state=ItemState.CREATED, file_path=gone, trackor_id=1)
    run = known_run(journal, final=False)
    run.row.settings = {"uploads": UploadPolicy.build(["/"], str(tmp_path), [], str(tmp_path / "log"),
                                                      1000).as_dict()}
    journal.put_records(run.key, [created])
    run.add_record(created)
    assert deliver(make_engine(api), run)
    assert api.count("upload") == 0 and created.log_key not in run.records   # delivered: out of memory
    assert run.owed_records() == 0                   # what the exit code is counted from
    assert gone in caplog.text and journal.records(run.key) == []


def test_a_run_file_waits_while_the_runs_trackor_cannot_be_found(journal, tmp_path, make_engine):
    api = FakeOneVizion()
    a_run_in(api, "INT-1-known")
    path = with_file(tmp_path)
    api.script("find", E503, E503, when=lambda a: a["type"] == "IntegrationRun")
    run = known_run(journal, final=False)
    run.row.settings = {"uploads": UploadPolicy.build(["/"], str(tmp_path), [], str(tmp_path / "log"),
                                                      1000).as_dict()}
    run.want_run_file(1, path)
    assert deliver(make_engine(api), run)
    assert api.files[(api.of_type("IntegrationRun")[0]["TRACKOR_ID"], "IR_FILE")][0] == "report.txt"
    assert api.count("find") == 3


def test_a_write_the_code_got_wrong_is_dropped_and_logged_and_the_others_go_on(journal, caplog):
    from hub.journal import _Op
    journal._submit(_Op([("INSERT INTO loose(installation) VALUES(?)", (object(),))]))   # cannot be bound
    journal.put_run(wrapper_row())
    journal.flush()
    assert journal.waiting_writes() == 0 and [r.run_key for r in journal.runs()] == ["INT-1-run"]
    assert "a journal write was dropped" in caplog.text


@pytest.mark.parametrize("count, size", [(400, 2000), (30, 65000)])   # many records, or a few merged ones
def test_delivered_records_give_their_space_back(journal, count, size):
    from hub.journal import VACUUM_PAGES
    journal.put_run(wrapper_row())
    records = [record(seq=n) for n in range(1, count + 1)]
    for one in records:
        one.fields_json = json.dumps({"IL_DESCRIPTION": "x" * size})
    journal.put_records("INT-1-run", records)
    journal.flush()
    journal.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    full = os.path.getsize(journal.path)
    journal.drop_records([r.log_key for r in records])
    journal.tick()
    # While in use, up to VACUUM_PAGES free pages stay for reuse; the rest go back at once.
    assert journal.db.execute("PRAGMA freelist_count").fetchone()[0] <= VACUUM_PAGES
    journal.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert os.path.getsize(journal.path) <= min(full, 4096 * (VACUUM_PAGES + 16))
    path = journal.path
    journal.close()                                          # and at close, every free page
    assert os.path.getsize(path) < 64 * 1024


# -- a child that floods ---------------------------------------------------------------------------

def test_output_is_a_flood_when_a_window_holds_256_kb_whatever_the_size_of_each_read(tmp_path):
    now = [50.0]
    spool = Spool(str(tmp_path / "spool" / "r"), clock=lambda: now[0])
    seen = []
    spool.on_data = seen.append
    spool.append(STDOUT, b"x" * 100 + b"\n", 1.0)              # a trickle
    for _ in range(40):                                        # 8 KB blocks, 320 KB within 20 ms
        now[0] += 0.0005
        spool.append(STDOUT, b"y" * 8191 + b"\n", 1.0)
    now[0] += 1.0                                              # the flood stopped a second ago
    spool.append(STDOUT, b"z" * 8191 + b"\n", 1.0)
    assert seen[0] is False and seen[-1] is False
    assert True in seen[1:-1] and seen[1:].index(True) == 31   # once 256 KB had come in the window
    spool.remove()


def test_a_floods_output_holds_new_jobs_and_wakes_no_worker(journal, make_engine):
    now = [100.0]
    engine = make_engine(FakeOneVizion(), clock=lambda: now[0])
    woken = []
    engine.wake = lambda: woken.append(now[0])
    engine.output(True)
    assert woken == [] and engine.hold_until > now[0]
    assert engine._idle_wait(housekeeper=True) <= engine.hold_until - now[0]   # the housekeeper looks then
    engine.output(False)
    assert woken == [100.0]
