"""The life of one integration run, and nothing else: open the run, supervise the child,
keep its output, close the run (SPEC §5 steps 3-8).

The data path: child pipes -> reader threads (hub.child) -> the run's spool (raw chunks in
plain files, or in memory while the disk refuses them) -> the delivery engine (records,
OneVizion). The child never waits on the network; its run is created, its records sent and
its final status reported by the engine, in the background, while the wrapper goes on to
the next entry.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from typing import Dict, Optional

from hub import child as childmod
from hub import spool as spool_mod
from hub import vocabulary as V
from hub.context import Context, spool_folder
from hub.state import ItemState, Origin, RunProgress, RunRow, Step


@dataclass
class RunOptions:
    grace: float = V.DEFAULT_GRACE_SECONDS
    max_upload_bytes: int = V.DEFAULT_MAX_UPLOAD_MB * 1_000_000
    drain_seconds: float = V.DEFAULT_DRAIN_SECONDS
    allow_overlap: bool = False


@dataclass
class Integration:
    """An Integration trackor as the wrapper looked it up."""

    key: str
    trackor_id: int
    name: str
    enabled: bool
    control_process: str
    read_stdout: bool


@dataclass
class RunReport:
    """How one entry's run went, for the exit code and the line on the terminal."""

    name: str
    run_key: str
    ok: bool
    problem: Optional[str]
    stopped_by: Optional[int]
    started: float
    ended: float


class SignalState:
    """Signals the wrapper received, passed on to whichever child is running."""

    def __init__(self):
        self.received: Optional[int] = None
        self.child: Optional[childmod.Child] = None
        self.event = threading.Event()   # set on a signal: stop waiting for OneVizion

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
    return f"{integration_key}-{time.strftime('%Y%m%d%H%M%S', time.localtime(at))}-{os.urandom(4).hex()}"


def checkbox(value) -> bool:
    """OneVizion's checkbox as read: "1"/"0", 1/0, booleans, or null (unchecked)."""
    return str(value).strip().lower() in ("1", "true", "yes", "on") if value is not None else False


class OverlapLock:
    """A lock file per integration, held while its child runs: a second wrapper on this machine
    sees it taken. The kernel drops it when the wrapper dies, even by kill -9."""

    def __init__(self, log_dir: str, integration_key: str):
        folder = os.path.join(log_dir, "locks")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self.path = os.path.join(folder, re.sub(r"[^A-Za-z0-9_.-]", "_", integration_key) + ".lock")
        self.fd: Optional[int] = None

    def acquire(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
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


def open_run(ctx: Context, integration: Integration, entry, cwd: str, options: RunOptions,
             started: float) -> RunProgress:
    """The run in the journal and in the engine: its create, its Last Run update, an open
    output. The engine sends the create at once; the child does not wait for it."""
    s = ctx.schema
    run_key = new_run_key(integration.key, started)
    settings = ctx.settings(cwd, integration.read_stdout, entry.upload_dirs, options.max_upload_bytes)
    row = RunRow(run_key=run_key, installation=ctx.installation.identity(), integration_key=integration.key,
                 origin=Origin.WRAPPER, settings=settings, started_at=started, integration_id=integration.trackor_id,
                 owner=ctx.owner.id, last_activity=started,
                 create=Step({s.run.status: s.run.running, s.run.start: ctx.now_text(started)}, ItemState.PENDING),
                 last_run=Step({s.integration.last_run: ctx.now_text(started)}, ItemState.PENDING),
                 output_open=True)
    spool = spool_mod.Spool(spool_folder(ctx.log_dir, run_key), on_condition=ctx.conditions.begin,
                            on_clear=ctx.conditions.end)
    ctx.journal.put_run(row, wait=True)
    run = RunProgress(row, [], spool)
    ctx.engine.add(run)
    return run


def supervise(ctx: Context, entry, integration: Integration, argv, cwd: str, env: Dict[str, str],
              options: RunOptions, signals: SignalState) -> Optional[RunReport]:
    """One entry's run, from its create to its final status in the journal; None when it was
    skipped because a run of it is still going on this machine."""
    lock = OverlapLock(ctx.log_dir, integration.key)
    if not options.allow_overlap and not lock.acquire():
        message = (f"{entry.name}: a run of this integration is still going on this machine; skipped "
                   f"(--allow-overlap runs it anyway)")
        ctx.log.warning(message)
        ctx.console.warning(message)
        return None
    try:
        return _supervise(ctx, entry, integration, argv, cwd, env, options, signals)
    finally:
        lock.release()


def _supervise(ctx, entry, integration, argv, cwd, env, options, signals) -> RunReport:
    started, clock = time.time(), time.monotonic()
    run = open_run(ctx, integration, entry, cwd, options, started)
    row, spool = run.row, run.spool
    env.update({"HUB_INTEGRATION_ID": integration.key, "HUB_INTEGRATION_NAME": entry.name,
                "HUB_CONTROL_PROCESS": integration.control_process, "HUB_RUN_ID": row.run_key})
    ctx.log.info("run %s started: %s, program %s with %d arguments", row.run_key, entry.name,
                 os.path.basename(argv[0]), len(argv) - 1)
    ctx.console.info(f"{entry.name}: run {row.run_key} started")

    def keep(stream: str, data: bytes, at: float) -> None:
        spool.append(spool_mod.STREAM_CODES[stream], data, at)

    child = childmod.Child(argv, cwd, env, keep, timeout=entry.timeout, grace=options.grace)
    outcome, problem = None, None
    try:
        child.start()
        signals.child = child
        if signals.received:
            child.stop(signals.received)
        outcome = child.wait(on_exit=spool.stop_waiting)
        problem = childmod.describe_outcome(outcome, entry.timeout)
    except childmod.ChildStartError as exc:
        problem = f"could not start {os.path.basename(argv[0])}: {exc.message}"
    finally:
        signals.child = None
        # A signal that stopped the child still lets the run close (its Error record and final
        # status go out); only a signal that comes while delivering cuts that short.
        signals.event.clear()
    # Exit code 0 with only a lingering grandchild: the run succeeded; the note is a warning.
    ok = outcome is not None and (problem is None or (
        outcome.exit_code == 0 and not outcome.timed_out and outcome.stopped_by is None))
    if problem:
        spool.note(V.WARNING if ok else V.ERROR, problem[:1].upper() + problem[1:])
    spool.retry_now()      # a condition that has cleared ends now, not "still"
    trouble = storage_trouble(ctx, started, spool)
    if trouble:
        spool.note(V.WARNING, trouble)
    spool.end()
    s = ctx.schema
    with ctx.engine.lock:
        row.output_open = False
        row.final = Step({s.run.status: s.run.ok if ok else s.run.warnings, s.run.finish: ctx.now_text()},
                         ItemState.PENDING)
        ctx.engine.changed()
    ctx.journal.put_run(row)
    ctx.log.info("run %s: the child ended (%s) after %.1f s", row.run_key, problem or "exit code 0",
                 time.monotonic() - clock)
    return RunReport(entry.name, row.run_key, ok, problem, outcome.stopped_by if outcome else None, clock,
                     time.monotonic())


def storage_trouble(ctx: Context, started: float, spool) -> Optional[str]:
    """The Warning record for a run during which the journal or the spool could not be
    written: what, from when, for how long, and whether the child was held back."""
    spans = ctx.conditions.since(started)
    if not spans and not spool.held_back:
        return None
    parts = []
    for what, since, until in spans:
        length = (until or time.time()) - since
        parts.append(f"{what} from {ctx.now_text(since)} for {length:.0f} s" + ("" if until else " (still at the end of the run)"))
    text = "The hub's local storage was in trouble during this run: " + "; ".join(parts) if parts else \
        "The hub's local storage was in trouble during this run"
    text += ". Output waited in memory and was delivered from there"
    if spool.held_back >= 0.05:
        text += f"; the child was held back for {spool.held_back:.1f} s while that memory was full"
    return text + "."
