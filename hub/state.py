"""The delivery state machine, written once: what the hub owes OneVizion for a run, what
can be sent next, what a result changes, and the run's verdict. No I/O: the journal stores
these rows, the delivery engine (hub.delivery) runs the jobs this module hands out.

Every thing the hub sends is an item with an `ItemState`:

    PENDING --(confirmed)--> DELIVERED           a run create, Last Run, a record, a file,
       |  \\--(record created, file owed)--> CREATED --> DELIVERED      the final status
       \\--(refused; or 500 five times)--> REFUSED (quarantined with the answer)

A run's items go in this order: its create first (everything else of the run needs it;
Last Run may go beside it); its records, each record's file after the record; the run's
own File field (the latest printed file, one upload at a time); and last, once the output
has ended and no record or file is still owed, the final status. Refused items never
block the final status; a refused run create blocks everything of the run but Last Run.
"""

from __future__ import annotations

import collections
import enum
import heapq
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from hub import vocabulary as V
from hub.retry import RetryState


class ItemState(enum.IntEnum):
    PENDING = 0
    CREATED = 1        # a record that exists in OneVizion and still owes its file
    DELIVERED = 2
    REFUSED = 3


class Origin(str, enum.Enum):
    """Who opened a run, which says who closes it."""

    WRAPPER = "wrapper"          # a wrapper supervises its child; if it dies, the next invocation closes the run
    CONTROLLER = "controller"    # RunController start: whoever opened it closes it
    KNOWN = "known"              # a run that exists in OneVizion; the journal only holds items for it


@dataclass
class Step:
    """One of a run's own items: its create, its Last Run update, its final status."""

    fields: Optional[Dict[str, Any]] = None      # None: nothing to send
    state: ItemState = ItemState.DELIVERED
    answer: Optional[str] = None                  # why it was refused

    @property
    def owed(self) -> bool:
        return self.fields is not None and self.state is ItemState.PENDING

    @property
    def refused(self) -> bool:
        return self.fields is not None and self.state is ItemState.REFUSED


@dataclass
class ParseState:
    """Where turning the run's raw output into records stands (kept with the records it made)."""

    next_chunk: int = 0                  # the next raw chunk (hub.spool) to parse
    next_seq: int = 1                    # the next line's number: its record's Log ID suffix
    leftover: Dict[str, str] = field(default_factory=dict)   # partial lines and long-line state
    ended: bool = False                  # the end of the output has been parsed

    def dump(self) -> str:
        return json.dumps({"next_chunk": self.next_chunk, "next_seq": self.next_seq, "leftover": self.leftover,
                           "ended": self.ended})

    @classmethod
    def load(cls, text: Optional[str]) -> "ParseState":
        data = json.loads(text) if text else {}
        return cls(data.get("next_chunk", 0), data.get("next_seq", 1), data.get("leftover", {}),
                   data.get("ended", False))


@dataclass
class RunRow:
    """A run as the journal keeps it."""

    run_key: str
    installation: str
    integration_key: str
    origin: Origin
    settings: Dict[str, Any]             # schema mapping, working dir, Read From STDOUT, upload rules, limits
    started_at: float
    integration_id: Optional[int] = None
    owner: Optional[str] = None
    last_activity: float = 0.0
    trackor_id: Optional[int] = None
    remote_key: Optional[str] = None     # the key OneVizion answered, when it generates its own
    create: Step = field(default_factory=Step)
    last_run: Step = field(default_factory=Step)
    final: Step = field(default_factory=Step)
    run_file: Optional[Tuple[int, str]] = None     # (seq, path) of the latest printed file still owed
    run_file_state: ItemState = ItemState.DELIVERED
    run_file_answer: Optional[str] = None
    output_open: bool = False            # the child's output may still grow
    parse: ParseState = field(default_factory=ParseState)
    notes: Dict[str, Any] = field(default_factory=dict)

    def statuses(self) -> Tuple[Tuple[str, Step], ...]:
        """The run's own steps, each with the name messages give it."""
        return (("the run's create", self.create), ("Last Run", self.last_run), ("the final status", self.final))


@dataclass
class RecordRow:
    """A Log record as the journal keeps it: fixed before it is first sent."""

    log_key: str
    run_key: str
    fields_json: str                     # the Log fields but TRACKOR_KEY, encoded once
    origin: str = "output"               # "output" (the child's lines, the hub's notes) or "helper"
    seq: Optional[int] = None
    file_path: Optional[str] = None
    state: ItemState = ItemState.PENDING
    trackor_id: Optional[int] = None
    answer: Optional[str] = None
    created_at: float = 0.0


class JobKind(enum.Enum):
    SYNC = "sync"                  # an adopted run: which of its records did OneVizion already get
    CREATE_RUN = "create run"
    LAST_RUN = "last run"
    PARSE = "parse"                # raw output -> records (no network)
    CREATE_RECORD = "create record"
    UPLOAD_FILE = "upload file"    # a created record's file
    RUN_FILE = "run file"          # the run's own File field: the latest printed file
    FINAL = "final status"


@dataclass(eq=False)
class Job:
    kind: JobKind
    run: "RunProgress"
    record: Optional[RecordRow] = None
    run_file: Optional[Tuple[int, str]] = None
    token: str = ""

    @property
    def network(self) -> bool:
        return self.kind is not JobKind.PARSE


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    CREATED = "created"            # a record created; its file still owed
    RETRY = "retry"                # not now (the retry state says when)
    REFUSED = "refused"
    SKIPPED = "skipped"            # nothing to send after all (a file that may not be uploaded)
    STOP = "stop"                  # credentials refused: stop sending


@dataclass
class Result:
    outcome: Outcome
    answer: Optional[str] = None         # refused: the answer, for --status
    trackor_id: Optional[int] = None
    records: List[RecordRow] = field(default_factory=list)   # PARSE: records formed; SYNC: found keys
    found: Optional[set] = None          # SYNC: the Log IDs OneVizion already has


_sequence = itertools.count()


class RunProgress:
    """One run this process delivers: its row, its records, what is in flight. Not
    thread-safe by itself: the engine calls it under one lock."""

    def __init__(self, row: RunRow, records: List[RecordRow] = (), spool=None, sync: bool = False):
        self.row = row
        self.spool = spool                   # hub.spool.Spool, or None for runs without output
        self.records: Dict[str, RecordRow] = {}
        self.ready: Deque[str] = collections.deque()      # Log IDs to create, oldest first
        self.waiting: List[Tuple[float, int, str]] = []   # (not before, n, Log ID): backing off
        self.files: Deque[str] = collections.deque()      # created records that owe their file
        self.retry: Dict[object, RetryState] = collections.defaultdict(RetryState)
        self.in_flight: set = set()
        self.done_helper_records: set = set()
        self.first: List[str] = []          # Log IDs to send before anything else (a helper's own)
        self.needs_sync = sync
        self.delivered = 0                   # records delivered by this process
        self.files_sent = 0                  # files uploaded into records by this process
        self.final_sent = False              # the final status delivered by this process
        self.refusals: List[str] = []        # what was refused in this process (for the stderr line)
        for record in records:
            self.add_record(record)

    # -- what is owed -------------------------------------------------------------------

    @property
    def key(self) -> str:
        return self.row.run_key

    def add_record(self, record: RecordRow) -> None:
        if record.log_key in self.records or record.log_key in self.done_helper_records:
            return
        self.records[record.log_key] = record
        if record.state is ItemState.PENDING:
            self.ready.append(record.log_key)
        elif record.state is ItemState.CREATED:
            self.files.append(record.log_key)

    def owed_records(self) -> int:
        return sum(1 for r in self.records.values() if r.state in (ItemState.PENDING, ItemState.CREATED))

    def refused_items(self) -> List[str]:
        """Each refused item with its answer, for --status and the stderr line."""
        row, items = self.row, []
        for name, step in (("run create", row.create), ("Last Run", row.last_run), ("final status", row.final)):
            if step.refused:
                items.append(f"{name}: {step.answer}")
        if row.run_file is not None and row.run_file_state is ItemState.REFUSED:
            items.append(f"run file {row.run_file[1]}: {row.run_file_answer}")
        items.extend(f"record {r.log_key}: {r.answer}" for r in self.records.values() if r.state is ItemState.REFUSED)
        return items

    def output_pending(self) -> bool:
        """Raw output not yet turned into records (or an output that may still grow), including
        output a parse could not turn into records in this invocation (it stays in the spool)."""
        return self._output_to_parse() or bool(self.row.notes.get(UNPARSED))

    def _output_to_parse(self) -> bool:
        if self.spool is None:
            return False
        return self.row.output_open or not self.row.parse.ended or self.spool.has_unparsed(self.row.parse.next_chunk)

    def complete(self) -> bool:
        """Nothing of this run is owed any more (refused items aside), or nothing more can be done
        for it in this invocation: it can leave the journal once no refused item (and no output
        that could not be parsed) is left either."""
        row = self.row
        return not (row.create.owed or row.last_run.owed or row.final.owed or self.in_flight
                    or self.ready or self.waiting or self.files or self._output_to_parse()
                    or (row.run_file is not None and row.run_file_state is ItemState.PENDING)
                    or self.needs_sync or (row.origin is Origin.WRAPPER and row.final.fields is None))

    def settled(self) -> bool:
        """Nothing more can happen for this run in this invocation: it is complete, or its refused
        create holds everything else back."""
        if self.complete():
            return True
        row = self.row
        return self.blocked() and not row.last_run.owed and not self.in_flight and not row.output_open

    def blocked(self) -> bool:
        """A refused run create: nothing but Last Run can go until it is retried."""
        return self.row.create.refused

    def waits_for_connection(self) -> bool:
        """Something of this run is ready to be sent and waits only for a connection: a record or
        a file, or its create. (Raw output that a record could carry does not count: when every
        connection is in use it waits and goes merged in the next record.)"""
        return bool(self.ready or self.files) or (self.row.create.owed and "create" not in self.in_flight)

    # -- what to do next ----------------------------------------------------------------

    def next_job(self, now: float, network: bool, records_wanted: int) -> Optional[Job]:
        """The next job of this run, or None. `network`: a request may start now;
        `records_wanted`: how many formed records the engine would like waiting (parse when fewer)."""
        row = self.row
        if network and self.first and not row.create.owed and not self.blocked():
            # This process's own record, never sent by anyone: it goes before the others, and
            # needs no check of what an earlier process may have sent.
            log_key = self.first.pop()
            record = self.records.get(log_key)
            if record is not None and record.state is ItemState.PENDING and log_key in self.ready:
                self._unqueue(log_key)
                return self._start(Job(JobKind.CREATE_RECORD, self, record=record), log_key)
        if network and self.needs_sync and not row.create.owed and not self.blocked():
            return self._start(Job(JobKind.SYNC, self), "sync") if "sync" not in self.in_flight else None
        if "sync" in self.in_flight:
            return None
        if network and row.last_run.owed and self._due("last_run", now):
            return self._start(Job(JobKind.LAST_RUN, self), "last_run")
        if row.create.owed:
            if network and self._due("create", now):
                return self._start(Job(JobKind.CREATE_RUN, self), "create")
            return None
        if self.blocked():
            return None
        if network:
            self._wake_waiting(now)
            if self.ready:
                record = self.records[self.ready.popleft()]
                return self._start(Job(JobKind.CREATE_RECORD, self, record=record), record.log_key)
            if self.files:
                record = self.records[self.files.popleft()]
                return self._start(Job(JobKind.UPLOAD_FILE, self, record=record), record.log_key)
            wanted = row.run_file
            if wanted is not None and row.run_file_state is ItemState.PENDING and "run_file" not in self.in_flight \
                    and self._due("run_file", now):
                return self._start(Job(JobKind.RUN_FILE, self, run_file=wanted), "run_file")
        if self.spool is not None and "parse" not in self.in_flight and self._parse_wanted(records_wanted):
            return self._start(Job(JobKind.PARSE, self), "parse")
        if network and self._final_ready() and self._due("final", now):
            return self._start(Job(JobKind.FINAL, self), "final")
        return None

    def next_wake(self) -> Optional[float]:
        """The earliest time a backing-off item of this run may go again."""
        times = [self.waiting[0][0]] if self.waiting else []
        times.extend(state.not_before for token, state in self.retry.items()
                     if isinstance(token, str) and state.not_before and token not in self.in_flight)
        return min(times) if times else None

    def _parse_wanted(self, records_wanted: int) -> bool:
        if not self.spool.has_unparsed(self.row.parse.next_chunk):
            return False
        # Every record made and not yet delivered counts, backing-off ones too: while OneVizion
        # fails, output stays raw in the spool (on disk) instead of growing as records in memory.
        in_flight_records = sum(1 for t in self.in_flight if t not in _RUN_TOKENS)
        return len(self.ready) + len(self.waiting) + len(self.files) + in_flight_records < records_wanted

    def _final_ready(self) -> bool:
        row = self.row
        if not row.final.owed or row.output_open or self.in_flight or self.ready or self.waiting or self.files:
            return False
        if self.spool is not None and (not row.parse.ended or self.spool.has_unparsed(row.parse.next_chunk)):
            return False
        return not (row.run_file is not None and row.run_file_state is ItemState.PENDING)

    def _due(self, token: str, now: float) -> bool:
        return token not in self.in_flight and self.retry[token].not_before <= now

    def _start(self, job: Job, token: str) -> Job:
        self.in_flight.add(token)
        job.token = token
        return job

    def _wake_waiting(self, now: float) -> None:
        while self.waiting and self.waiting[0][0] <= now:
            _, _, log_key = heapq.heappop(self.waiting)
            record = self.records.get(log_key)
            if record is None:
                continue
            (self.ready if record.state is ItemState.PENDING else self.files).appendleft(log_key)

    # -- what a result changes -----------------------------------------------------------

    def finish(self, job: Job, result: Result) -> None:
        """Apply a job's result to the in-memory state (the engine persists it)."""
        self.in_flight.discard(job.token)
        kind, row = job.kind, self.row
        if kind is JobKind.PARSE:
            for record in result.records:
                self.add_record(record)
            return
        if kind is JobKind.SYNC:
            if result.outcome is Outcome.DELIVERED:
                self.needs_sync = False
                for log_key in result.found or ():
                    record = self.records.get(log_key)
                    if record is not None and record.state is ItemState.PENDING:
                        record.state = ItemState.CREATED if record.file_path else ItemState.DELIVERED
                        self._unqueue(log_key)
                        if record.state is ItemState.CREATED:
                            self.files.append(log_key)
                        else:
                            self.records.pop(log_key, None)
            return
        if result.outcome is Outcome.RETRY:
            self._requeue(job)
            return
        if result.outcome is Outcome.STOP:
            self._requeue(job, at_once=True)
            return
        delivered = result.outcome in (Outcome.DELIVERED, Outcome.SKIPPED, Outcome.CREATED)
        refused = result.outcome is Outcome.REFUSED
        if refused:
            self.refusals.append(f"{kind.value}: {result.answer}")
        if kind in (JobKind.CREATE_RUN, JobKind.LAST_RUN, JobKind.FINAL):
            step = {JobKind.CREATE_RUN: row.create, JobKind.LAST_RUN: row.last_run, JobKind.FINAL: row.final}[kind]
            step.state = ItemState.DELIVERED if delivered else ItemState.REFUSED
            step.answer = result.answer if refused else None
            if kind is JobKind.FINAL and delivered:
                self.final_sent = True
            if kind is JobKind.CREATE_RUN and result.trackor_id is not None:
                row.trackor_id = result.trackor_id
            self.retry.pop(job.token, None)
        elif kind is JobKind.RUN_FILE:
            if row.run_file == job.run_file:   # a later printed file keeps it owed
                row.run_file_state = ItemState.DELIVERED if delivered else ItemState.REFUSED
                row.run_file_answer = result.answer if refused else None
            self.retry.pop(job.token, None)
        else:
            record = job.record
            if result.trackor_id is not None:
                record.trackor_id = result.trackor_id
            if result.outcome is Outcome.CREATED:
                # Created, but its file could not go yet: the file backs off like any item.
                record.state = ItemState.CREATED
                not_before = self.retry[job.token].not_before
                if not_before > 0:
                    heapq.heappush(self.waiting, (not_before, next(_sequence), record.log_key))
                else:
                    self.files.append(record.log_key)
                return
            record.state = ItemState.DELIVERED if delivered else ItemState.REFUSED
            record.answer = result.answer if refused else None
            if delivered:
                # Its text is in OneVizion now and leaves the journal: holding it here too would
                # make memory grow with everything the run ever printed.
                record.fields_json = ""
                self.delivered += 1
                if record.file_path and result.outcome is Outcome.DELIVERED:
                    self.files_sent += 1
                # Delivered: nothing of it is needed any more (memory stays bounded by what is owed).
                self.records.pop(record.log_key, None)
                if record.origin == "helper":   # its journal row may linger a moment: never resend it
                    self.done_helper_records.add(record.log_key)
            self.retry.pop(job.token, None)

    def want_run_file(self, seq: int, path: str) -> None:
        """A newer printed file for the run's File field: the latest printed wins."""
        if self.row.run_file is None or self.row.run_file_state is not ItemState.PENDING or seq > self.row.run_file[0]:
            self.row.run_file = (seq, path)
            self.row.run_file_state = ItemState.PENDING
            self.row.run_file_answer = None

    def retry_refused(self) -> int:
        """--retry-refused: every refused item of the run is owed again."""
        count, row = 0, self.row
        for step in (row.create, row.last_run, row.final):
            if step.refused:
                step.state, step.answer, count = ItemState.PENDING, None, count + 1
        if row.run_file is not None and row.run_file_state is ItemState.REFUSED:
            row.run_file_state, row.run_file_answer, count = ItemState.PENDING, None, count + 1
        for record in self.records.values():
            if record.state is ItemState.REFUSED:
                record.state, record.answer, count = ItemState.PENDING, None, count + 1
                self.ready.append(record.log_key)
        return count

    def _requeue(self, job: Job, at_once: bool = False) -> None:
        if job.record is None:
            return
        state = self.retry[job.token]
        if at_once or state.not_before <= 0:
            (self.ready if job.record.state is ItemState.PENDING else self.files).appendleft(job.record.log_key)
        else:
            heapq.heappush(self.waiting, (state.not_before, next(_sequence), job.record.log_key))

    def _unqueue(self, log_key: str) -> None:
        try:
            self.ready.remove(log_key)
        except ValueError:
            pass


_RUN_TOKENS = {"sync", "create", "last_run", "parse", "run_file", "final"}
# RunRow.notes key: why the run's output could not be turned into records (it stays in the spool).
UNPARSED = "unparsed"


# -- the verdict ----------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    exit_code: int
    message: Optional[str]        # for stderr: None when there is nothing to say


def verdict(ok: bool, stopped_by: Optional[int], refused: List[str], owed_records: int, owed_statuses: int,
            credentials_refused: bool = False, blocked: bool = False,
            status_names: Optional[List[str]] = None) -> Verdict:
    """A run's exit code from its child's outcome and what the journal still holds for it.
    `status_names`: what the owed statuses are, when the caller knows ("the run's create");
    else one is the final status.

    A signal the wrapper received wins (128+N); then anything OneVizion refused (6); then
    anything still owed (75); then the run's own status (0 or 1)."""
    parts = []
    if refused:
        parts.append(f"OneVizion refused {len(refused)} item{'s' if len(refused) != 1 else ''} "
                     f"(first: {refused[0]}); kept in the journal as refused, see --status")
    if owed_records or owed_statuses:
        what = []
        if owed_records:
            what.append(f"{owed_records} record{'s' if owed_records != 1 else ''}")
        if owed_statuses and status_names:
            what.extend(status_names)
        elif owed_statuses:
            what.append("the final status" if owed_statuses == 1 else f"{owed_statuses} statuses")
        one = owed_records + owed_statuses == 1
        them = "it" if one else "them"
        why = ("behind the refused run create" if blocked else "OneVizion refused the credentials"
               if credentials_refused else f"OneVizion did not confirm {them} in time")
        parts.append(f"{' and '.join(what)} {'waits' if one else 'wait'} in the journal ({why})" + (
            "" if blocked else f"; the next invocation or --replay delivers {them}"))
    message = "; ".join(parts) or None
    if stopped_by:
        return Verdict(V.EXIT_SIGNAL_BASE + stopped_by, message)
    if refused:
        return Verdict(V.EXIT_REFUSED, message)
    if owed_records or owed_statuses:
        return Verdict(V.EXIT_JOURNALED, message)
    return Verdict(V.EXIT_OK if ok else V.EXIT_WARNINGS, None)
