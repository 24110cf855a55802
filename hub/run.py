"""The life of one integration run, and nothing else: find the Integration, open
the run, supervise the child, journal its output, close the run (SPEC §5).

The data path: child pipes -> reader threads (hub.child) -> ChunkWriter (raw chunks
into the journal, in batches) -> Sender threads (lines, records, OneVizion). The
child never waits on the network; the journal is what OneVizion is owed.
"""

from __future__ import annotations

import collections
import fcntl
import os
import re
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, Optional

from hub import child as childmod
from hub import vocabulary as V
from hub.api import exact
from hub.context import Context
from hub.errors import ApiError, NotFoundError, UnreachableError, UsageError


@dataclass
class RunOptions:
    grace: float = V.DEFAULT_GRACE_SECONDS
    max_upload_bytes: int = V.DEFAULT_MAX_UPLOAD_MB * 1_000_000
    drain_seconds: float = 30.0
    allow_overlap: bool = False
    control_process: Optional[str] = None


class SignalState:
    """Signals the wrapper received, passed on to whichever child is running."""

    def __init__(self):
        self.received: Optional[int] = None
        self.child: Optional[childmod.Child] = None
        self.event = threading.Event()   # set on the first signal: stop waiting for OneVizion

    def handle(self, signum, _frame=None) -> None:
        self.received = self.received or signum
        self.event.set()
        if self.child is not None:
            self.child.stop(signum)

    def install(self) -> None:
        self.previous = {signum: signal.signal(signum, self.handle)
                         for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def uninstall(self) -> None:
        for signum, handler in getattr(self, "previous", {}).items():
            signal.signal(signum, handler)


def new_run_key(integration_key: str, at: float) -> str:
    """Unique and sortable: the Integration ID, the start time, a short random suffix."""
    return f"{integration_key}-{time.strftime('%Y%m%d%H%M%S', time.localtime(at))}-{secrets.token_hex(2)}"


def checkbox(value) -> bool:
    """OneVizion's checkbox as read: "1"/"0", 1/0, booleans, or null (unchecked)."""
    return str(value).strip().lower() in ("1", "true", "yes", "on") if value is not None else False


def find_integration(ctx: Context, name: str) -> Dict:
    """The Integration trackor with exactly this name."""
    s = ctx.schema.integration
    fields = [s.name, s.enabled, s.control_process, s.read_from_stdout]
    try:
        found = ctx.call(ctx.api.find, s.trackor_type, {s.name: exact(name)}, fields)
    except ApiError as exc:
        if exc.status == 404:
            raise UsageError(f"{exc.message} (check the 'integration' section of the schema mapping: "
                             f"trackor type {s.trackor_type}, fields {', '.join(fields)})") from None
        raise UnreachableError(exc.message) from None
    if not found:
        raise NotFoundError(f"no Integration named {name!r} in OneVizion ({s.trackor_type}.{s.name})")
    if len(found) > 1:
        ctx.log.warning("%d Integrations named %r; using %s", len(found), name, found[0]["TRACKOR_KEY"])
    return found[0]


class ChunkWriter:
    """Moves raw pipe reads into the journal in batches, off the reader threads, so a
    child that floods its pipes does not wait for each disk write. At most
    MAX_PENDING bytes wait in memory: past that the reader waits for the journal
    (memory stays bounded whatever the child prints; the pipe absorbs the pause)."""

    MAX_PENDING = 4 << 20
    MAX_BATCH = 1 << 20

    def __init__(self, ctx: Context, run_key: str, on_commit):
        self.ctx, self.run_key, self.on_commit = ctx, run_key, on_commit
        self.pending: "collections.deque" = collections.deque()
        self.pending_bytes = 0
        self.closed = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="journal-writer", daemon=True)
        self.thread.start()

    def put(self, stream: str, data: bytes, at: float) -> None:
        with self.changed:
            while self.pending_bytes > self.MAX_PENDING:
                self.changed.wait()
            self.pending.append((stream, data, at))
            self.pending_bytes += len(data)
            self.changed.notify_all()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self.thread.join()

    def _take(self):
        with self.changed:
            while not self.pending and not self.closed:
                self.changed.wait()
            batch, size = [], 0
            while self.pending and (not batch or size + len(self.pending[0][1]) <= self.MAX_BATCH):
                item = self.pending.popleft()
                batch.append(item)
                size += len(item[1])
            return batch, size

    def _loop(self) -> None:
        while True:
            batch, size = self._take()
            if not batch:
                return
            try:
                self.ctx.journal.add_chunks(self.run_key, batch)
            except Exception:
                self.ctx.log.exception("run %s: output could not be written to the journal", self.run_key)
            with self.changed:
                self.pending_bytes -= size
                self.changed.notify_all()
            self.on_commit()


class OverlapLock:
    """A lock file per integration, held while its run goes on: a second wrapper on this
    machine sees it taken. The kernel drops it when the wrapper dies, even by kill -9."""

    def __init__(self, log_dir: str, integration_key: str):
        folder = os.path.join(log_dir, "locks")
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, re.sub(r"[^A-Za-z0-9_.-]", "_", integration_key) + ".lock")
        self.fd: Optional[int] = None

    def acquire(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            return False

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def run_integration(ctx: Context, entry, options: RunOptions, signals: SignalState) -> int:
    """One entry of Integration.json, from lookup to final status; returns its exit code."""
    integration = find_integration(ctx, entry.name)
    s = ctx.schema.integration
    key = integration["TRACKOR_KEY"]
    if not checkbox(integration.get(s.enabled)):
        ctx.log.info("%s (%s): Enabled is unchecked; skipped", entry.name, key)
        return V.EXIT_OK
    control = integration.get(s.control_process) or ""
    if options.control_process is not None and control != options.control_process:
        ctx.log.info("%s: control process %r is not %r; skipped", entry.name, control, options.control_process)
        return V.EXIT_OK
    cwd = os.path.abspath(entry.working_dir or os.getcwd())
    env = dict(os.environ)
    env.update(entry.environment)
    argv = childmod.build_argv(entry.executable_path, entry.shell, cwd, env)
    lock = OverlapLock(ctx.log_dir, key)
    if not options.allow_overlap and not lock.acquire():
        message = f"{entry.name}: a run of this integration is still going on this machine; skipped (--allow-overlap runs it anyway)"
        ctx.log.warning(message)
        print(f"warning: {message}", file=sys.stderr)
        return V.EXIT_OK
    try:
        return _supervise(ctx, entry, options, signals, integration, argv, cwd, env)
    finally:
        lock.release()


def _open_run(ctx: Context, integration: Dict, cwd: str, read_stdout: bool) -> str:
    r = ctx.schema.run
    started = time.time()
    run_key = new_run_key(integration["TRACKOR_KEY"], started)
    create = {r.status: r.running, r.start: ctx.now_text(started)}
    last_run = {ctx.schema.integration.last_run: ctx.now_text(started)}
    ctx.journal.open_run(run_key, integration["TRACKOR_KEY"], integration["TRACKOR_ID"], cwd, read_stdout,
                         create, last_run)
    # The run is created now, before the child starts, so that a schema mistake stops
    # here; when OneVizion is merely unavailable, the journal keeps the create for later.
    # Last Run is left to the sender: it goes out while the child runs.
    try:
        created = ctx.api.create(r.trackor_type, {"TRACKOR_KEY": run_key, **create},
                                 [(ctx.schema.integration.trackor_type, integration["TRACKOR_KEY"])])
        ctx.journal.mark_created(run_key, created["TRACKOR_ID"])
    except ApiError as exc:
        if not exc.transient and exc.status != 401:
            ctx.journal.forget_run(run_key)
            raise UsageError(f"OneVizion refused to create the run: {exc.message} (check the 'run' section "
                             f"of the schema mapping: {r.trackor_type}, {r.status}, {r.start})") from None
        ctx.log.warning("run %s: OneVizion unavailable, kept in the journal: %s", run_key, exc.message)
    except UnreachableError as exc:
        ctx.log.warning("run %s: OneVizion unreachable, kept in the journal: %s", run_key, exc.message)
    return run_key


def _supervise(ctx, entry, options, signals, integration, argv, cwd, env) -> int:
    s = ctx.schema
    read_stdout = checkbox(integration.get(s.integration.read_from_stdout))
    run_key = _open_run(ctx, integration, cwd, read_stdout)
    env.update({"HUB_INTEGRATION_ID": integration["TRACKOR_KEY"], "HUB_INTEGRATION_NAME": entry.name,
                "HUB_CONTROL_PROCESS": integration.get(s.integration.control_process) or "",
                "HUB_RUN_ID": run_key})
    ctx.log.info("run %s started: %s, program %s with %d arguments", run_key, entry.name,
                 os.path.basename(argv[0]), len(argv) - 1)
    sender = ctx.sender(options.max_upload_bytes)
    sender.start(run_key)
    writer = ChunkWriter(ctx, run_key, sender.wake)
    child = childmod.Child(argv, cwd, env, writer.put, timeout=entry.timeout, grace=options.grace)
    outcome, problem = None, None
    try:
        child.start()
        signals.child = child
        if signals.received:
            child.stop(signals.received)
        outcome = child.wait()
        problem = childmod.describe_outcome(outcome, entry.timeout)
    except childmod.ChildStartError as exc:
        problem = f"could not start {os.path.basename(argv[0])}: {exc.message}"
    finally:
        signals.child = None
        # A signal that stopped the child still lets the run close (SPEC: the Error record and
        # the final status go out); only a signal that comes while delivering cuts that short.
        signals.event.clear()
        writer.close()
    ctx.journal.end_output(run_key)
    # Exit code 0 with only a lingering grandchild: the run succeeded; the note is a warning.
    ok = outcome is not None and (problem is None or (
        outcome.exit_code == 0 and not outcome.timed_out and outcome.stopped_by is None))
    if problem:
        ctx.journal.add_note(run_key, V.WARNING if ok else V.ERROR, problem[:1].upper() + problem[1:])
    ctx.journal.finish_run(run_key, {s.run.status: s.run.ok if ok else s.run.warnings,
                                     s.run.finish: ctx.now_text()})
    sender.wake()
    # A signal after the child ended cuts the wait short: what is left stays in the journal.
    delivered = sender.wait_done(time.monotonic() + options.drain_seconds, interrupt=signals.event)
    # Whatever is left (a refused record, an outage) is for the next invocation to adopt.
    ctx.journal.release(run_key)
    ctx.log.info("run %s finished: %s; %s", run_key, problem or "exit code 0",
                 "delivered" if delivered else "some records wait in the journal")
    if outcome is not None and outcome.stopped_by:
        return V.EXIT_SIGNAL_BASE + outcome.stopped_by
    if not delivered:
        print(f"warning: {entry.name}: run {run_key} ended ({problem or 'exit code 0'}) but OneVizion did not "
              f"confirm everything ({sender.last_error or sender.failure}); kept in the journal for the next "
              f"invocation or --replay", file=sys.stderr)
        return V.EXIT_JOURNALED
    return V.EXIT_OK if ok else V.EXIT_WARNINGS
