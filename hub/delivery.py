"""The delivery engine: one per invocation, delivering every run this process owns
(its own, and those it adopted from a process that is gone) to OneVizion.

Up to 16 worker threads take jobs from one planner (hub.state.RunProgress.next_job, under
one short lock). A job is a request (a run create, a record create, an upload, a final
status...) or the parse of raw output into records, which runs outside the planner's lock
so that workers never wait on it. How many requests may be in flight at once follows the
answers (hub.retry.Throttle); each failed item backs off on its own (hub.retry.RetryPolicy).

What an answer means comes from hub.answers, through hub.api: a refused item is quarantined
(kept in the journal with its answer); a 401 stops all sending in this invocation; a create
whose earlier attempt may have landed is read back by its exact key before it is sent again.
A worker never dies: a job that raises fails alone (its type and message in the hub's log),
counts as a failed attempt, and the worker takes the next job.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable, Dict, List, Optional

from hub import lines as L
from hub import uploads
from hub.zones import format_time, zone
from hub import spool as S
from hub import vocabulary as V
from hub.answers import Answer, Kind
from hub.api import CallFailed, OneVizion, exact
from hub.retry import Next, RetryPolicy, Throttle
from hub.schema import Schema, field_value, schema_from_json
from hub.state import UNPARSED, ItemState, Job, JobKind, Outcome, RecordRow, Result, RunProgress

MAX_WORKERS = 16
PARSE_BYTES = 2 << 20            # raw output parsed at a time: bounds the memory a parse takes
HOUSEKEEPING_SECONDS = 0.1       # how often an idle worker looks for records other processes added
# The first worker keeps house (and so looks for work at least this often); the others, when
# idle, sleep until they are woken (new output, a finished job) or a retry is due, and at most
# this long: sixteen threads waking ten times a second cost more CPU than a slow run's requests.
IDLE_SECONDS = 1.0
# While a child floods its pipes, delivery steps aside so that the reader threads have the
# interpreter (and the machine's cores) to themselves: OneVizion could not keep up with such a
# rate anyway, and the child must never wait. Nobody is woken by a flood's output either: on two
# cores, a worker that wakes (or waits for the interpreter, which wakes it every millisecond)
# takes the child's core, and the child is pre-empted (about a hundred times in a 200k-line
# flood, measured). The housekeeper looks when the hold ends. A flood that goes on still lets a
# job through now and then, so that a long one does not stop delivery altogether.
FLOOD_HOLD_SECONDS = 0.03
FLOOD_DUTY_SECONDS = 0.25
# A parse let through during a flood takes this much at most: string work on a block holds the
# interpreter without a break, and 2 MB of it (about 10 ms) is longer than a 1 MiB pipe lasts a
# child that prints 300 MB/s.
FLOOD_PARSE_BYTES = 256 << 10
ONLY_IF_RUNNING = "only_if_running"   # RunRow.notes: a deferred RunController stop
FOUND_CLOSED = "found_closed"         # RunRow.notes: the status such a stop found instead of Running
SYNC_PAGE = 2000                 # Log IDs read per request when an adopted run is checked
PROGRESS_BYTES = 1 << 20         # an upload streaming out counts as progress every this many bytes
_DELIVERED = Answer(Kind.DELIVERED, 200, "")


class Engine:
    """Delivers the runs added to it until stopped."""

    def __init__(self, journal, api: OneVizion, log, say: Callable[[str], None], policy: RetryPolicy,
                 throttle: Throttle, secret_files=(), clock: Callable[[], float] = time.monotonic,
                 workers: int = MAX_WORKERS):
        self.journal, self.api, self.log, self.say = journal, api, log, say
        self.secret_files = tuple(secret_files)     # this invocation's Passwords.json: never uploaded
        self.policy, self.throttle, self.clock = policy, throttle, clock
        self.max_workers = workers
        self.runs: Dict[str, RunProgress] = {}
        self.order: List[str] = []
        # One mutex, two conditions: `lock` for whoever waits on the state (Engine.wait, the
        # scripts), `idle` for workers without a job, which are woken one at a time: a worker
        # that takes a job wakes the next (so a burst of work spreads over as many as it needs),
        # and new output or a finished job does not wake all sixteen for one parse.
        mutex = threading.RLock()
        self.lock = threading.Condition(mutex)
        self.idle = threading.Condition(mutex)
        self.threads: List[threading.Thread] = []
        self.stopping = False
        self.halted: Optional[str] = None       # why nothing more is sent (credentials refused)
        self.progress = 0                       # items finished (delivered, refused): the drain watches it
        self.network_in_flight = 0
        self.busy = 0                           # workers inside a job
        self.hold_until = 0.0                   # no new job before this, while a child floods
        self._last_held_job = 0.0
        self._next_housekeeping = 0.0
        self._data_version = None
        self._schemas: Dict[str, Schema] = {}
        self._run_schemas: Dict[str, tuple] = {}    # run key -> (its settings' schema, the Schema)
        self._policies: Dict[str, uploads.UploadPolicy] = {}
        self._refused_paths: set = set()
        self._said_keys: set = set()
        self._journal_resets = journal.reset_count
        self.internal_errors = 0

    # -- control --------------------------------------------------------------------------------

    def add(self, run: RunProgress) -> None:
        with self.lock:
            if run.key not in self.runs:
                self.order.append(run.key)
            self.runs[run.key] = run
            if run.spool is not None:
                run.spool.on_data = self.output
            self.changed()
        self.start()

    def start(self) -> None:
        """Two workers to begin with; more as jobs keep them all busy (up to max_workers), so a
        helper script with one record starts no more threads than it needs."""
        with self.lock:
            while len(self.threads) < min(2, self.max_workers):
                self._spawn()

    def _spawn(self) -> None:
        number = len(self.threads)
        thread = threading.Thread(target=self._work, args=(number,), name=f"delivery-{number}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def changed(self) -> None:
        """The runs' state changed (a run added, a record found, a child ended): whoever waits on
        it looks, and so does one idle worker."""
        with self.lock:
            self.lock.notify_all()
            self.idle.notify()

    def wake(self) -> None:
        """New output (or anything else a worker may have to act on): one idle worker looks.
        Those waiting on the runs' state (Engine.wait) are woken by what workers finish, not by
        every chunk a child prints."""
        with self.lock:
            self.idle.notify()

    def output(self, flooding: bool) -> None:
        """A child's output was kept. While it floods: start no new job for a moment and wake
        nobody (see FLOOD_HOLD_SECONDS); else one idle worker looks."""
        if flooding:
            self.hold_until = self.clock() + FLOOD_HOLD_SECONDS
        else:
            self.wake()

    def stop(self, patience: float = 2.0) -> None:
        """Stop the workers. One inside a request to a hung server is not waited for past
        `patience` seconds: it is a daemon, and the journal stays consistent without it."""
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
            self.idle.notify_all()
        deadline = time.monotonic() + patience
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def done(self, keys) -> bool:
        with self.lock:
            return all(self.runs[k].complete() for k in keys if k in self.runs)

    def wait(self, keys, idle_seconds: float, interrupt: Optional[threading.Event] = None,
             within: Optional[float] = None) -> bool:
        """Wait until every run in `keys` owes nothing (refused items aside), as long as
        deliveries keep being confirmed: give up after `idle_seconds` without progress, after
        `within` seconds in all when given (progress or not), at once when sending has stopped
        (credentials) or `interrupt` is set. True when done."""
        last_progress, since = -1, time.monotonic()
        end = since + within if within is not None else None
        while True:
            with self.lock:
                if all(self.runs[k].settled() for k in keys if k in self.runs):
                    return all(self.runs[k].complete() for k in keys if k in self.runs)
                if self.halted or (end is not None and time.monotonic() >= end):
                    return False
                if self.progress != last_progress:
                    last_progress, since = self.progress, time.monotonic()
                elif time.monotonic() - since >= idle_seconds:
                    return False
                self.lock.wait(0.1)
            if interrupt is not None and interrupt.is_set():
                return False

    def run(self, key: str) -> Optional[RunProgress]:
        return self.runs.get(key)

    # -- the worker -------------------------------------------------------------------------------

    def _work(self, number: int = 0) -> None:
        housekeeper = number == 0
        while True:
            with self.lock:
                if self.stopping:
                    return
                now = self.clock()
                if now < self.hold_until and now - self._last_held_job < FLOOD_DUTY_SECONDS:
                    self.idle.wait(self.hold_until - now)
                    continue
                try:
                    job = self._plan()
                except Exception:  # noqa: BLE001 - a planning bug must not end the worker (nor all of them)
                    self.internal_errors += 1
                    self.log.exception("the delivery engine could not plan its next job")
                    self.idle.wait(1.0)
                    continue
                if job is not None and now < self.hold_until:
                    self._last_held_job = now
                if job is None:
                    self.idle.wait(self._idle_wait(housekeeper))
                    housekeeping = housekeeper and self.clock() >= self._next_housekeeping
                    if housekeeping:
                        self._next_housekeeping = self.clock() + HOUSEKEEPING_SECONDS
                else:
                    housekeeping = False
                    if job.network:
                        self.network_in_flight += 1
                    self.busy += 1
                    if self.busy >= len(self.threads) and len(self.threads) < self.max_workers:
                        self._spawn()
                    self.idle.notify()   # there may be more: the next idle worker looks
            if job is None:
                if housekeeping:
                    self._housekeeping()
                continue
            try:
                result = self._do(job)
            except Exception as exc:  # noqa: BLE001 - a job that raises fails alone; the worker goes on
                result = self._internal_error(job, exc)
            with self.lock:
                if job.network:
                    self.network_in_flight -= 1
                self.busy -= 1
                try:
                    job.run.finish(job, result)
                except Exception:  # noqa: BLE001 - the item stays owed in the journal; the worker goes on
                    self.internal_errors += 1
                    self.log.exception("run %s: the result of %s could not be applied", job.run.key, job.kind.value)
                    self.lock.notify_all()
                    continue
                if result.outcome in (Outcome.DELIVERED, Outcome.REFUSED, Outcome.SKIPPED, Outcome.CREATED) or (
                        job.kind is JobKind.PARSE and result.records):
                    self.progress += 1
                complete = job.run.complete()
                # Engine.wait looks every 0.1 s anyway (for progress and its deadlines); it is woken
                # at once only by what could end its wait. Waking it after each of a flood's
                # thousands of jobs cost the wrapper an eighth of its CPU time (py-spy, 1M lines).
                if complete or self.halted or (job.run.blocked() and job.run.settled()):
                    self.lock.notify_all()
            try:
                self._persist(job, result, complete)
            except Exception:  # noqa: BLE001 - the state is in memory; the journal writer logs its own faults
                self.log.exception("run %s: the journal could not record %s", job.run.key, job.kind.value)

    def _plan(self) -> Optional[Job]:
        now = self.clock()
        network = self.halted is None and self.throttle.allowed(self.network_in_flight)
        wanted = max(2, int(self.throttle.limit))
        count = len(self.order)
        for i in range(count):
            key = self.order[i]
            job = self.runs[key].next_job(now, network, wanted)
            if job is not None:
                # The next look starts after this run, so that no run starves the others.
                self.order.append(self.order.pop(i))
                return job
        return None

    def _idle_wait(self, housekeeper: bool = True) -> float:
        wake = [run.next_wake() for run in self.runs.values()]
        soonest = min((w for w in wake if w is not None), default=None)
        wait = HOUSEKEEPING_SECONDS if housekeeper else IDLE_SECONDS
        held = self.hold_until - self.clock()
        if housekeeper and held > 0:
            wait = min(wait, max(0.005, held))   # a flood's output woke nobody
        if soonest is not None:
            wait = min(wait, max(0.005, soonest - self.clock()))
        pause = self.throttle.wait_hint()
        if pause:
            wait = min(wait, max(0.005, pause))
        return wait

    def _housekeeping(self) -> None:
        """Retry journal writes that wait; pick up records other processes added to our runs;
        after a damaged journal was replaced, write our runs into the new one."""
        self.journal.tick()
        if self.journal.reset_count != self._journal_resets:
            self._journal_resets = self.journal.reset_count
            self._persist_everything()
        version = self.journal.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        with self.lock:
            keys = [k for k, r in self.runs.items() if not r.complete() or r.row.origin.value != "wrapper"]
        found = self.journal.helper_records(keys)
        with self.lock:
            for record in found:
                run = self.runs.get(record.run_key)
                if run is not None and record.log_key not in run.records:
                    run.add_record(record)
                    self.changed()

    def _persist_everything(self) -> None:
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            self.journal.put_run(run.row)
            owed = [r for r in run.records.values() if r.state is not ItemState.DELIVERED]
            if owed:
                self.journal.put_records(run.key, owed)

    def _internal_error(self, job: Job, exc: Exception) -> Result:
        self.internal_errors += 1
        self.log.exception("run %s: %s failed with an internal error", job.run.key, job.kind.value)
        answer = Answer(Kind.SERVER_ERROR, None, f"internal error: {type(exc).__name__}: {exc}")
        return self._failed(job, answer)

    # -- persisting results ---------------------------------------------------------------------------

    def _persist(self, job: Job, result: Result, complete: bool) -> None:
        run, kind = job.run, job.kind
        if kind is JobKind.PARSE:
            pass   # the parse job wrote its records itself, before they could be sent
        elif kind is JobKind.SYNC:
            if result.found:
                # Found and without a file to upload: delivered, out of memory and out of the journal.
                self.journal.drop_records([k for k in result.found if k not in run.records])
        elif job.record is not None:
            if result.outcome in (Outcome.RETRY, Outcome.STOP):
                return
            if job.record.state is ItemState.DELIVERED:
                self.journal.drop_records([job.record.log_key])
            else:
                self.journal.set_record(job.record)
        elif result.outcome not in (Outcome.RETRY, Outcome.STOP):
            self.journal.put_run(run.row)
        if complete:
            self._finished(run)

    def _finished(self, run: RunProgress) -> None:
        """A run that owes nothing leaves the journal, unless something of it was refused
        (that waits there for --retry-refused or --discard)."""
        if run.refused_items() or run.row.notes.get(UNPARSED):
            return
        self.journal.drop_run(run.key)
        if run.spool is not None:
            run.spool.remove()
        self.log.info("run %s: everything delivered; it left the journal", run.key)

    # -- the jobs ---------------------------------------------------------------------------------------

    def _do(self, job: Job) -> Result:
        return {JobKind.PARSE: self._parse, JobKind.SYNC: self._sync, JobKind.CREATE_RUN: self._create_run,
                JobKind.LAST_RUN: self._last_run, JobKind.CREATE_RECORD: self._create_record,
                JobKind.UPLOAD_FILE: self._upload_file, JobKind.RUN_FILE: self._run_file,
                JobKind.FINAL: self._final}[job.kind](job)

    def schema(self, run: RunProgress) -> Schema:
        raw = run.row.settings.get("schema") or {}
        known = self._run_schemas.get(run.key)
        if known is not None and known[0] is raw:   # asked for several times per record: no re-encoding
            return known[1]
        text = json.dumps(raw, sort_keys=True)
        if text not in self._schemas:
            self._schemas[text] = schema_from_json(raw, "the journal")
        self._run_schemas[run.key] = (raw, self._schemas[text])
        return self._schemas[text]

    def _parse(self, job: Job) -> Result:
        """Raw output -> records, written to the journal (with the parse position) before any is sent."""
        run = job.run
        row = run.row
        flooding = self.clock() < self.hold_until
        chunks = run.spool.take(row.parse.next_chunk, FLOOD_PARSE_BYTES if flooding else PARSE_BYTES)
        if not chunks:
            return Result(Outcome.SKIPPED)
        try:
            lines, seq, leftover, ended, last_at = self._lines(run, chunks)
        except Exception as exc:  # noqa: BLE001 - a parser bug must not lose or hold back the output
            self.internal_errors += 1
            self.log.exception("run %s: its output could not be parsed; it goes as plain text", run.key)
            self.say(f"error: run {run.key}: some of its output could not be parsed ({type(exc).__name__}: {exc}); "
                     f"it goes to OneVizion as plain text")
            lines, seq, leftover, ended, last_at = _plain_lines(run, chunks)
        schema = self.schema(run)
        tz = zone(row.settings.get("timezone"))
        records, now = [], time.time()
        for seq_of, stream, at, mtype, text, marker, path in lines:
            log_key = f"{row.run_key}-{log_number(seq_of)}"
            fields = {"TRACKOR_KEY": log_key, schema.log.date_time: format_time(at, tz),
                      schema.log.message_type: schema.log.type_value(mtype),
                      schema.log.message: L.cut_message(marker + text, schema.log.message_limit),
                      schema.log.description: text}
            records.append(RecordRow(log_key, row.run_key, json.dumps(fields), "output", seq_of, path,
                                     created_at=now))
        parse = type(row.parse)(chunks[-1][0] + 1, seq, leftover, ended)
        spool = run.spool
        upto = parse.next_chunk
        # The latest printed file becomes the run's File (seqs only grow, so it is newer than any
        # an earlier parse found): owed in the same transaction as its record, since no other
        # run-level write may follow before sending stops (a 401) or the process dies.
        printed = [(record.seq, record.file_path) for record in records if record.file_path]
        run_file = max(printed) if printed else None
        # In the file before any is sent: a resend after a crash must have the same key and content.
        self.journal.put_records(row.run_key, records, parse, last_at, on_written=lambda: spool.release(upto),
                                 wait=True, run_file=run_file)
        with self.lock:
            row.parse = parse
            row.last_activity = last_at
            if run_file is not None:
                run.want_run_file(*run_file)
        if run_file is not None:
            # A copy of the row another thread took before the line above may be written after
            # the records; this one, newer, goes after it.
            self.journal.put_run(row)
        return Result(Outcome.DELIVERED, records=records)

    def _lines(self, run: RunProgress, chunks):
        """(records as hub.records makes them, next seq, leftover, ended, time of the last output)."""
        from hub.records import EOF_STREAM, NOTE_PREFIX, RecordMaker   # only a wrapper parses output
        row, settings, schema = run.row, run.row.settings, self.schema(run)
        maker = RecordMaker(settings.get("cwd") or "/", bool(settings.get("read_stdout", True)), self._policy(run),
                            max(1, int(self.throttle.limit)), dict(row.parse.leftover), row.parse.next_seq,
                            message_limit=schema.log.message_limit, description_limit=schema.log.description_limit,
                            on_refused=lambda decision: self._not_uploaded(run, decision))
        ended, last_at = row.parse.ended, row.last_activity
        for number, stream, at, data in chunks:
            if stream == S.END:
                maker.feed(EOF_STREAM, b"", at)
                ended = True
            elif stream in S.NOTE_TYPES:
                maker.feed(NOTE_PREFIX + S.NOTE_TYPES[stream], data, at)
            else:
                maker.feed(S.STREAM_NAMES.get(stream, V.STDERR), data, at)
                last_at = max(last_at, at)
        return maker.records(), maker.seq, maker.leftover(), ended, last_at

    def _sync(self, job: Job) -> Result:
        """An adopted run: which of its owed records OneVizion already has (a create the gone
        process sent may have landed), by one paged read of the run's Log IDs."""
        run = job.run
        schema = self.schema(run)
        found, page = set(), 1
        try:
            while True:
                rows = self.api.find(schema.log.trackor_type,
                                     {f"{schema.run.trackor_type}.TRACKOR_KEY": exact(self._run_key(run))},
                                     ["TRACKOR_KEY"], page=page, per_page=SYNC_PAGE)
                before = len(found)
                found.update(field_value(r, "TRACKOR_KEY") for r in rows)
                # A short page ends it; so does one with nothing new (a server that ignores `page`
                # would otherwise be read forever).
                if len(rows) < SYNC_PAGE or len(found) == before:
                    break
                page += 1
        except CallFailed as failed:
            return self._failed(job, failed.answer)
        self._answered(_DELIVERED)
        return Result(Outcome.DELIVERED, found={k for k in found if k in run.records})

    def _run_key(self, run: RunProgress) -> str:
        return run.row.remote_key or run.row.run_key

    def _create_run(self, job: Job) -> Result:
        run = job.run
        row, schema = run.row, self.schema(run)
        fields = dict(row.create.fields or {})
        fields["TRACKOR_KEY"] = row.run_key
        result = self._create(job, schema.run.trackor_type, row.run_key, json.dumps(fields),
                              [(schema.integration.trackor_type, row.integration_key)])
        if result.outcome is Outcome.DELIVERED:
            self.log.info("run %s created in OneVizion (trackor id %s)", row.run_key, result.trackor_id)
        elif result.outcome is Outcome.REFUSED:
            self.log.error("run %s: OneVizion refused to create it: %s (check the 'run' section of the schema "
                           "mapping; --check tells what this installation lacks)", row.run_key, result.answer)
        return result

    def _last_run(self, job: Job) -> Result:
        row = job.run.row
        if not row.integration_id:
            return Result(Outcome.SKIPPED)
        try:
            self.api.update(row.integration_id, row.last_run.fields)
        except CallFailed as failed:
            return self._failed(job, failed.answer)
        return self._ok()

    def _create_record(self, job: Job) -> Result:
        run, record = job.run, job.record
        schema = self.schema(run)
        opened = None
        if record.file_path:
            opened, record = self._open_for_record(run, record)
            job.record = record
        try:
            result = self._create(job, schema.log.trackor_type, record.log_key, record.fields_json,
                                  [(schema.run.trackor_type, self._run_key(run))])
            if result.outcome is not Outcome.DELIVERED or not record.file_path:
                return result
            return self._send_file(job, result.trackor_id, opened, created=True)
        finally:
            if opened is not None:
                opened.close()

    def _upload_file(self, job: Job) -> Result:
        run, record = job.run, job.record
        opened, record = self._open_for_record(run, record)
        job.record = record     # the run now holds this row: the result must change it, not the old one
        if opened is None:
            return Result(Outcome.SKIPPED, trackor_id=record.trackor_id)
        try:
            return self._send_file(job, record.trackor_id, opened, created=False)
        finally:
            opened.close()

    def _open_for_record(self, run: RunProgress, record: RecordRow):
        """Open a record's file for upload (checked again now: it may have changed since it was
        printed). Not uploadable: the record goes as an ordinary line; over the size limit now:
        it becomes a Warning saying so (SPEC §5 step 7)."""
        explicit = record.origin == "helper"
        opened = uploads.open_for_upload(record.file_path, self._policy(run), check_dirs=not explicit)
        if isinstance(opened, uploads.Opened):
            return opened, record
        self._not_uploaded(run, opened)
        fields = json.loads(record.fields_json)
        if opened.kind == uploads.TOO_LARGE and record.state is ItemState.PENDING:
            schema = self.schema(run)
            text = (f"{fields.get(schema.log.description, '')}: "
                    f"{uploads.over_limit_message(opened.size, self._policy(run).max_bytes)}")
            fields[schema.log.message_type] = schema.log.warning
            fields[schema.log.message] = L.cut_message(text, schema.log.message_limit)
            fields[schema.log.description] = text
        changed = RecordRow(record.log_key, record.run_key, json.dumps(fields), record.origin, record.seq, None,
                            record.state, record.trackor_id, record.answer, record.created_at)
        with self.lock:
            run.records[record.log_key] = changed
        return None, changed

    def _send_file(self, job: Job, trackor_id: int, opened, created: bool) -> Result:
        if opened is None:
            return Result(Outcome.DELIVERED, trackor_id=trackor_id)
        schema = self.schema(job.run)
        try:
            self.api.upload(trackor_id, schema.log.file, opened.name, self._streaming(uploads.MultipartBody(opened)))
        except CallFailed as failed:
            result = self._failed(job, failed.answer, token=job.record.log_key)
            if result.outcome in (Outcome.RETRY, Outcome.STOP) and created:
                # The record exists: the journal must say so, or the next invocation creates it again.
                return Result(Outcome.CREATED, trackor_id=trackor_id)
            result.trackor_id = trackor_id
            return result
        self._answered(_DELIVERED)
        return Result(Outcome.DELIVERED, trackor_id=trackor_id)

    def _streaming(self, body: uploads.MultipartBody) -> "_Streaming":
        return _Streaming(body, self._moved)

    def _moved(self) -> None:
        """Delivery is moving though no item is finished yet (an upload streams out): `wait`
        must not give up on it as if OneVizion had stopped answering."""
        with self.lock:
            self.progress += 1
            self.lock.notify_all()

    def _run_file(self, job: Job) -> Result:
        run = job.run
        schema = self.schema(run)
        trackor_id = self._run_trackor_id(job)
        if isinstance(trackor_id, Result):
            return trackor_id
        opened = uploads.open_for_upload(job.run_file[1], self._policy(run), check_dirs=True)
        if not isinstance(opened, uploads.Opened):
            self._not_uploaded(run, opened)
            return Result(Outcome.SKIPPED)
        try:
            self.api.upload(trackor_id, schema.run.file, opened.name, self._streaming(uploads.MultipartBody(opened)))
        except CallFailed as failed:
            return self._failed(job, failed.answer)
        finally:
            opened.close()
        return self._ok()

    def _final(self, job: Job) -> Result:
        run = job.run
        if run.row.notes.get(ONLY_IF_RUNNING):
            # A RunController stop whose run could not be read when it was asked: it closes the
            # run only if the run is still Running now (SPEC §7: a closed run is left alone).
            mapping = self.schema(run).run
            found = self._find_run(job, [mapping.status])
            if isinstance(found, Result):
                return found
            status = field_value(found, mapping.status)
            if status != mapping.running:
                with self.lock:
                    run.row.notes[FOUND_CLOSED] = status
                return Result(Outcome.REFUSED, answer=f"run {self._run_key(run)} is no longer {mapping.running!r} "
                                                      f"(its status is {status!r}); nothing changed")
            trackor_id = found["TRACKOR_ID"]
        else:
            trackor_id = self._run_trackor_id(job)
            if isinstance(trackor_id, Result):
                return trackor_id
        try:
            self.api.update(trackor_id, run.row.final.fields)
        except CallFailed as failed:
            return self._failed(job, failed.answer)
        self.log.info("run %s: final status sent: %s", run.key, run.row.final.fields)
        return self._ok()

    def _run_trackor_id(self, job: Job):
        """The run's TRACKOR_ID: known from its create, else read by its exact key."""
        run = job.run
        if run.row.trackor_id:
            return run.row.trackor_id
        found = self._find_run(job, ["TRACKOR_KEY"])
        return found if isinstance(found, Result) else found["TRACKOR_ID"]

    def _find_run(self, job: Job, fields):
        """The run's trackor in OneVizion (these fields), read by its exact key; a Result when the
        read failed or found none (refused: the run does not exist there)."""
        run = job.run
        schema = self.schema(run)
        key = self._run_key(run)
        try:
            rows = self.api.find(schema.run.trackor_type, {"TRACKOR_KEY": exact(key)}, fields)
        except CallFailed as failed:
            return self._failed(job, failed.answer)
        row = next((r for r in rows if field_value(r, "TRACKOR_KEY") == key), None)
        if row is None:
            return self._failed(job, Answer(Kind.REFUSED, 404, f"no {schema.run.trackor_type} with key {key} in "
                                                               f"OneVizion"))
        with self.lock:
            run.row.trackor_id = row["TRACKOR_ID"]
        return row

    # -- one create, idempotent --------------------------------------------------------------------------

    def _create(self, job: Job, trackor_type: str, key: str, fields_json: str, parents) -> Result:
        """Create with a client-set key. An attempt that may have landed is read back by its
        exact key before any resend; a refusal is read back too (a duplicate key means an
        earlier attempt landed)."""
        state = job.run.retry[job.token]
        if state.ambiguous:
            found = self._read_back(job, trackor_type, key)
            if isinstance(found, Result):
                return found
            if found is not None:
                return self._ok(found)
        try:
            answer = self.api.create(trackor_type, {}, parents, fields_json=fields_json)
        except CallFailed as failed:
            if failed.answer.kind is Kind.REFUSED:
                found = self._read_back(job, trackor_type, key)
                if isinstance(found, Result):   # the read-back could not tell (retry) or met a 401 (stop)
                    return found
                if isinstance(found, int):
                    return self._ok(found)
            return self._failed(job, failed.answer)
        self._check_key(job, trackor_type, key, answer.get("TRACKOR_KEY"))
        return self._ok(answer["TRACKOR_ID"])

    def _read_back(self, job: Job, trackor_type: str, key: str):
        """The TRACKOR_ID of the trackor with this exact key, None when there is none, or a
        Result when the read itself failed."""
        try:
            found = self.api.find(trackor_type, {"TRACKOR_KEY": exact(key)}, ["TRACKOR_KEY"])
        except CallFailed as failed:
            if failed.answer.kind is Kind.REFUSED:
                return None     # the read is refused too: the create's own answer decides
            return self._failed(job, failed.answer, strike=False)
        for row in found:
            if field_value(row, "TRACKOR_KEY") == key:
                return row["TRACKOR_ID"]
        return None

    def _check_key(self, job: Job, trackor_type: str, sent: str, answered) -> None:
        """A create answered with another key: the installation generates keys for the type. The
        hub keeps its own key for its bookkeeping and parents the run's records by the one
        OneVizion gave; it says so once in its log."""
        if answered is None or answered == sent:
            return
        if job.kind is JobKind.CREATE_RUN:
            with self.lock:
                job.run.row.remote_key = answered
        if trackor_type not in self._said_keys:
            self._said_keys.add(trackor_type)
            self.log.warning("OneVizion generates keys for %s: it answered key %s for %s; the hub keeps its own key "
                             "in its journal, but a retried create can no longer be recognised by key (turn key "
                             "generation off for this type; --check tells)", trackor_type, answered, sent)

    # -- answers ---------------------------------------------------------------------------------------

    def _answered(self, answer: Answer) -> None:
        """Tell the throttle of an answer: how many requests were in flight, and whether work
        waited for a connection (looked at only when the answer could raise the limit)."""
        in_flight = self.network_in_flight
        waiting = False
        if self.throttle.may_grow(answer, in_flight):
            with self.lock:
                waiting = any(run.waits_for_connection() for run in self.runs.values())
        self.throttle.on_answer(answer, in_flight, waiting)

    def _ok(self, trackor_id: Optional[int] = None) -> Result:
        self._answered(_DELIVERED)
        return Result(Outcome.DELIVERED, trackor_id=trackor_id)

    def _failed(self, job: Job, answer: Answer, token: Optional[str] = None, strike: bool = True) -> Result:
        """What a failed attempt of a job means now: retry later, refused, or stop (401)."""
        self._answered(answer)
        state = job.run.retry[token or job.token]
        decision = self.policy.after(state, answer, self.clock(), strike=strike)
        if decision.next is Next.STOP:
            self._halt(answer)
            return Result(Outcome.STOP)
        if decision.next is Next.REFUSE:
            self.log.error("run %s: %s refused by OneVizion, kept in the journal: %s", job.run.key, job.kind.value,
                           answer.describe())
            return Result(Outcome.REFUSED, answer=answer.describe())
        self.log.warning("run %s: delivery failed, will retry (%s): %s", job.run.key, job.kind.value,
                         answer.describe())
        return Result(Outcome.RETRY)

    def _halt(self, answer: Answer) -> None:
        with self.lock:
            if self.halted:
                return
            self.halted = f"OneVizion at {self.api.host} refused the credentials in Passwords.json (401)"
        self.log.error("%s: nothing more is sent by this invocation; everything stays in the journal", self.halted)
        self.say(f"error: {self.halted}; nothing more is sent by this invocation, everything stays in the local "
                 f"journal")

    def _policy(self, run: RunProgress) -> Optional[uploads.UploadPolicy]:
        """The run's upload rules (kept with it), with this invocation's Passwords.json added."""
        saved = run.row.settings.get("uploads")
        if not saved:
            return None
        text = json.dumps(saved, sort_keys=True)
        if text not in self._policies:
            self._policies[text] = uploads.UploadPolicy.from_dict(saved, self.secret_files)
        return self._policies[text]

    def _not_uploaded(self, run: RunProgress, decision) -> None:
        """A named file that is not uploaded: the hub's log says why, by path only, once per path."""
        if decision.path in self._refused_paths:
            return
        self._refused_paths.add(decision.path)
        self.log.warning("run %s: %s", run.key, decision.log_message())


class _Streaming:
    """A streamed request body (hub.uploads.MultipartBody) that reports every PROGRESS_BYTES sent.

    Engine.wait gives up after its idle time without progress; counting only finished items made
    an upload longer than that (16 MB over a 4 MB/s link, against a helper's 5 s) be given up
    mid-stream every time, the record left to the journal (exit 75) and the upload begun again
    by the next invocation."""

    def __init__(self, body: uploads.MultipartBody, on_progress: Callable[[], None]):
        self.body, self.on_progress = body, on_progress
        self.content_type, self.length = body.content_type, body.length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        unreported = 0
        for chunk in self.body:
            yield chunk
            unreported += len(chunk)
            if unreported >= PROGRESS_BYTES:
                unreported = 0
                self.on_progress()


def log_number(seq: int) -> str:
    """A record's number in its Log ID: six digits (`000042`, SPEC §4), so that sorting a run's
    records by Log ID gives the order of the output. Past 999,999 lines a letter goes first
    (`A1000000`, then `B10000000`): letters sort after digits, so the order still holds."""
    text = f"{seq:06d}"
    return text if len(text) == 6 else chr(ord("A") + len(text) - 7) + text


def _plain_lines(run: RunProgress, chunks):
    """The fallback when the parser fails on some output: each chunk as plain text, a record per
    Description-sized part, typed by its stream; partial lines carried from before included.
    Nothing is lost or held back, only less tidy."""
    limit = int((run.row.settings.get("schema") or {}).get("log", {}).get("description_limit")
                or V.DESCRIPTION_LIMIT)
    seq, ended, last_at, out = run.row.parse.next_seq, run.row.parse.ended, run.row.last_activity, []
    carried = {name: text for name, text in run.row.parse.leftover.items() if name in (V.STDOUT, V.STDERR)}
    for number, stream, at, data in chunks:
        if stream == S.END:
            ended = True
            continue
        if stream in S.NOTE_TYPES:
            name, mtype = "hub", S.NOTE_TYPES[stream]
        else:
            name = S.STREAM_NAMES.get(stream, V.STDERR)
            mtype = V.ERROR if name == V.STDERR else V.INFO
            last_at = max(last_at, at)
        raw = carried.pop(name, "").encode("latin-1") + data
        text = raw.decode("utf-8", "replace")
        for start in range(0, max(1, len(text)), limit):
            out.append((seq, name, at, mtype, text[start:start + limit], "", None))
            seq += 1
    return out, seq, {}, ended, last_at
