"""Delivery of one run's journal entries to OneVizion: the run itself, its Last Run
update, its Log records (and their files) and, last, its final status.

A few worker threads share one OneVizion connection pool. Each worker, when free,
takes the next job under one planning lock. When no record is waiting, the worker
parses the raw output that has piled up since the last look into records: when
more lines wait than there are workers, consecutive lines of the same stream and
type become one record (up to the Description limit); otherwise one record per
line. So a sender that keeps up sends each line alone, in real time, and a child
that outpaces delivery gets fewer, larger records. Nothing is dropped or
reordered: each record's key carries the sequence number of its first line.

Transient failures (no answer, 5xx, 401) are retried with exponential backoff and
jitter; a refusal (other 4xx) is logged and the record kept in the journal for
`--replay`, so one bad record never blocks the final status.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from datetime import datetime
from typing import Callable, Dict, List, Optional, Set

from hub import journal as J
from hub import lines as L
from hub.api import OneVizion, exact
from hub.errors import ApiError, UnreachableError
from hub.records import RecordMaker
from hub.schema import schema_from_json

PARSE_BYTES = 2 << 20            # chunk bytes parsed at a time: bounds the wrapper's memory
IDLE_WAIT = 0.5                   # seconds between looks for work from other processes


class Backoff:
    """Exponential backoff with full jitter; `base` and `cap` are injectable so fault tests are fast."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random):
        self.base, self.cap, self.rand = base, cap, rand

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.base * (2 ** attempt)) * (0.5 + self.rand())


def format_time(at: float, tz) -> str:
    """OneVizion's date-time format, in the installation's time zone."""
    return datetime.fromtimestamp(at, tz).strftime("%Y-%m-%dT%H:%M:%S")


def _transient(exc: Exception) -> bool:
    return isinstance(exc, UnreachableError) or (isinstance(exc, ApiError) and (exc.transient or exc.status == 401))


class Sender:
    """Delivers the journal entries of one run with `workers` threads."""

    def __init__(self, journal: J.Journal, api: OneVizion, schema, tz, log: logging.Logger,
                 max_upload_bytes: int, workers: int = 4, backoff: Optional[Backoff] = None):
        self.journal, self.api, self.schema, self.tz, self.log = journal, api, schema, tz, log
        self.max_upload_bytes = max_upload_bytes
        self.workers = workers
        self.backoff = backoff or Backoff()
        self.plan_lock = threading.Lock()
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.in_flight: Set[object] = set()
        self.threads: List[threading.Thread] = []
        self.failure: Optional[str] = None      # a refusal that stops this run's delivery
        self.delivered_records = 0
        self.delivered_statuses = 0
        self.last_error: Optional[str] = None
        self.schemas: Dict[str, object] = {}

    # -- control ----------------------------------------------------------------------

    def start(self, run_key: str) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, args=(run_key,), name=f"sender-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def wake(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait_done(self, deadline: float, interrupt: Optional[threading.Event] = None) -> bool:
        """Wait until the run is delivered, the deadline (time.monotonic()) passes or `interrupt`
        is set; then stop the workers. True when everything was delivered."""
        for thread in self.threads:
            while thread.is_alive() and time.monotonic() < deadline and not (interrupt and interrupt.is_set()):
                thread.join(min(0.1, max(0.0, deadline - time.monotonic())))
        done = not any(t.is_alive() for t in self.threads)
        self.stop()
        return done and self.failure is None

    def stop(self, patience: float = 2.0) -> None:
        """Stop the workers. A worker inside a request to a hung server is not waited for past
        `patience` seconds in all: it is a daemon, and the journal stays consistent without it."""
        self.stopping.set()
        self.wake()
        deadline = time.monotonic() + patience
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def deliver(self, run_key: str, deadline: float) -> bool:
        """Deliver one run completely (or until the deadline): replays and helper scripts."""
        self.stopping.clear()
        self.threads = []
        self.start(run_key)
        return self.wait_done(deadline)

    def send_one(self, run_key: str, record: int, deadline: float) -> int:
        """Deliver one record now, retrying until the deadline; returns its journal state
        (DELIVERED, REJECTED, or still PENDING/CREATED when OneVizion did not answer in time)."""
        attempt = 0
        while True:
            try:
                self._send_record(self.journal.run(run_key), record)
            except (UnreachableError, ApiError) as exc:
                if not _transient(exc):
                    raise
                self.last_error = exc.message
                pause = self.backoff.delay(attempt)
                if time.monotonic() + pause > deadline:
                    return self._state(record)
                time.sleep(pause)
                attempt += 1
                continue
            return self._state(record)

    def _state(self, record: int) -> int:
        # Gone from the journal: another process adopted the run and delivered it
        # (only delivered records are pruned).
        row = self.journal.record(record)
        return J.DELIVERED if row is None else row["state"]

    # -- the worker -------------------------------------------------------------------

    def _work(self, run_key: str) -> None:
        attempt = 0
        while not self.stopping.is_set():
            token, job = None, None
            try:
                with self.plan_lock:
                    token, job = self._next_job(run_key)
                if job == "done":
                    self.wake()
                    return
                if job is None:
                    with self.changed:
                        self.changed.wait(IDLE_WAIT)
                    continue
                job()
                attempt = 0
            except (UnreachableError, ApiError) as exc:
                if not _transient(exc):
                    raise
                self.last_error = exc.message
                self.log.warning("run %s: delivery failed, will retry: %s", run_key, exc.message)
                self.stopping.wait(self.backoff.delay(attempt))
                attempt += 1
            except Exception as exc:  # a bug must not kill delivery silently: log, stop this run's delivery
                if self.stopping.is_set():
                    return  # the process is closing its journal and log under this worker: nothing to say
                self.log.exception("run %s: delivery stopped by an internal error", run_key)
                self.failure = f"internal error: {type(exc).__name__}: {exc}"
                self.stopping.set()
            finally:
                if token is not None:
                    with self.plan_lock:
                        self.in_flight.discard(token)
                    self.wake()

    def _next_job(self, run_key: str):
        """(in-flight token, job): a callable, None for nothing now, "done" when nothing is owed."""
        if self.failure:
            return None, "done"
        run = self.journal.run(run_key)
        if run is None:
            return None, "done"
        if not run["created"]:
            if "create" in self.in_flight:
                return None, None
            self.in_flight.add("create")
            return "create", lambda: self._create_run(run)
        if run["last_run_fields"] and "last_run" not in self.in_flight:
            self.in_flight.add("last_run")
            return "last_run", lambda: self._send_last_run(run)
        waiting = self.journal.unsent_records(run_key, self.in_flight, limit=1)
        if not waiting and self.journal.has_chunks(run_key):
            self._parse(run)
            waiting = self.journal.unsent_records(run_key, self.in_flight, limit=1)
        if waiting:
            record = waiting[0]
            self.in_flight.add(record)
            return record, lambda: self._send_record(run, record)
        if self.in_flight or self.journal.has_chunks(run_key) or self.journal.open_count(run_key):
            return None, None
        if run["final_fields"] and not run["final_done"]:
            self.in_flight.add("final")
            return "final", lambda: self._send_final(run)
        if run["final_done"] or (run["output_closed"] and not run["supervised"]):
            self.journal.prune(run_key)   # every delivered run ends here, whoever delivered it
            return None, "done"
        return None, None

    def _schema_for(self, run):
        """The schema mapping the run was opened with (a replay may run with another -s)."""
        text = run["schema"]
        if not text:
            return self.schema
        if text not in self.schemas:
            self.schemas[text] = schema_from_json(json.loads(text), "the journal")
        return self.schemas[text]

    # -- chunks to lines to records -------------------------------------------------

    def _parse(self, run) -> None:
        """Turn the chunks waiting in the journal into records, atomically with the splitter state."""
        run_key = run["run_key"]
        chunks = self.journal.take_chunks(run_key, PARSE_BYTES)
        maker = RecordMaker(run["cwd"], bool(run["read_stdout"]), self.max_upload_bytes, self.workers,
                            J.load(run["leftover"]) or {}, run["next_seq"])
        for chunk in chunks:
            maker.feed(chunk["stream"], chunk["data"], chunk["at"])
        self.journal.store_parsed(run_key, [c["id"] for c in chunks], maker.records(), maker.leftover(), maker.seq)

    # -- the network jobs -------------------------------------------------------------

    def _create_run(self, run) -> None:
        schema = self._schema_for(run)
        fields = dict(J.load(run["create_fields"]) or {})
        fields["TRACKOR_KEY"] = run["run_key"]
        trackor_id = self._create(schema.run.trackor_type, fields, [(schema.integration.trackor_type,
                                                                      run["integration_key"])])
        if trackor_id is None:
            self.failure = f"OneVizion refused to create run {run['run_key']}"
            return
        self.journal.mark_created(run["run_key"], trackor_id)
        self.log.info("run %s created in OneVizion (trackor id %s)", run["run_key"], trackor_id)

    def _send_last_run(self, run) -> None:
        try:
            if run["integration_id"]:
                self.api.update(run["integration_id"], J.load(run["last_run_fields"]))
        except ApiError as exc:
            if _transient(exc):
                raise
            self.log.error("run %s: Last Run not set: %s", run["run_key"], exc.message)
        self.journal.last_run_sent(run["run_key"])

    def _send_record(self, run, record: int) -> None:
        head = self.journal.record(record)
        if head is None or run is None:
            return  # delivered by another process meanwhile (see _state)
        trackor_id = head["trackor_id"]
        if head["state"] == J.PENDING:
            key = head["log_key"] or f"{run['run_key']}-{head['seq']:06d}"
            schema = self._schema_for(run)
            trackor_id = self._create(schema.log.trackor_type, self._record_fields(schema, key, head),
                                      [(schema.run.trackor_type, run["run_key"])], record=record)
            if trackor_id is None:
                return
            self.journal.set_record_state(record, J.CREATED if head["file_path"] else J.DELIVERED, trackor_id)
        if head["file_path"]:
            self._upload(run, trackor_id, head["file_path"], explicit=head["log_key"] is not None)
            self.journal.set_record_state(record, J.DELIVERED)
        self.delivered_records += 1

    def _record_fields(self, schema, key: str, head) -> Dict[str, object]:
        log = schema.log
        return {
            "TRACKOR_KEY": key,
            log.date_time: format_time(head["at"], self.tz),
            log.message_type: log.type_value(head["mtype"]),
            log.message: L.cut_message(head["marker"] + head["text"]),
            log.description: head["description"] if head["description"] is not None else head["text"],
        }

    def _create(self, trackor_type: str, fields, parents, record: Optional[int] = None) -> Optional[int]:
        """Create with a client-set key; a refusal may mean an earlier attempt landed, so read the key back."""
        try:
            return self.api.create(trackor_type, fields, parents)["TRACKOR_ID"]
        except ApiError as exc:
            if _transient(exc):
                raise
            found = self.api.find(trackor_type, {"TRACKOR_KEY": exact(fields["TRACKOR_KEY"])}, ["TRACKOR_KEY"])
            if found:
                return found[0]["TRACKOR_ID"]
            self.log.error("%s %s refused by OneVizion, kept in the journal for --replay: %s",
                           trackor_type, fields["TRACKOR_KEY"], exc.message)
            self.last_error = exc.message
            if record is not None:
                self.journal.set_record_state(record, J.REJECTED, error=exc.message)
            return None

    def _upload(self, run, trackor_id: int, path: str, explicit: bool = False) -> None:
        name = os.path.basename(path)
        schema = self._schema_for(run)
        try:
            with open(path, "rb") as stream:
                self.api.upload(trackor_id, schema.log.file, name, stream)
            run_id = run["trackor_id"] or self._run_id(run)
            # A line's file is also the run's latest file; a record added by
            # IntegrationWrapperAddingLog.py keeps its file to itself (SPEC §6).
            if run_id and not explicit:
                with open(path, "rb") as stream:
                    self.api.upload(run_id, schema.run.file, name, stream)
        except OSError as exc:
            self.log.warning("run %s: file %s not uploaded: %s", run["run_key"], path, exc.strerror)
        except ApiError as exc:
            if _transient(exc):
                raise
            self.log.error("run %s: file %s refused: %s", run["run_key"], path, exc.message)

    def _run_id(self, run) -> Optional[int]:
        run_key = run["run_key"]
        found = self.api.find(self._schema_for(run).run.trackor_type, {"TRACKOR_KEY": exact(run_key)},
                              ["TRACKOR_KEY"])
        if found:
            self.journal.set_trackor_id(run_key, found[0]["TRACKOR_ID"])
            return found[0]["TRACKOR_ID"]
        return None

    def _send_final(self, run) -> None:
        fields = J.load(run["final_fields"])
        try:
            run_id = run["trackor_id"] or self._run_id(run)
            if run_id is None:
                raise ApiError(f"run {run['run_key']} not found in OneVizion", 404)
            self.api.update(run_id, fields)
            self.delivered_statuses += 1
            self.log.info("run %s: final status sent: %s", run["run_key"], fields)
        except ApiError as exc:
            if _transient(exc):
                raise
            self.log.error("run %s: final status refused: %s", run["run_key"], exc.message)
            self.last_error = exc.message
        self.journal.final_sent(run["run_key"])
