"""What every invocation of the three scripts sets up first: its log, the parsed
Passwords.json and Schema.json, the OneVizion connection, the journal, and the
delivery of whatever earlier invocations left undelivered (SPEC §5 "Nothing is lost").
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from hub import cli, config, vocabulary as V, wrapper_log
from hub.api import OneVizion
from hub.errors import ApiError, UnreachableError
from hub.journal import Journal
from hub.schema import schema_as_dict
from hub.sender import Backoff, Sender, format_time

JOURNAL_FILE = "journal.sqlite3"
# Parallel record creates per run (one connection each): enough to hide a 20 ms round trip,
# few enough to keep an installation's load sane (bench/ measured 4 against 8).
SENDER_WORKERS = 8


@dataclass
class Context:
    installation: object
    schema: object
    api: OneVizion
    journal: Journal
    log: object
    log_dir: str
    backoff: Backoff

    @property
    def tz(self):
        return self.installation.tzinfo()

    def now_text(self, at: Optional[float] = None) -> str:
        return format_time(time.time() if at is None else at, self.tz)

    def sender(self, max_upload_bytes: int = V.DEFAULT_MAX_UPLOAD_MB * 1_000_000,
               workers: int = SENDER_WORKERS) -> Sender:
        return Sender(self.journal, self.api, self.schema, self.tz, self.log, max_upload_bytes,
                      workers=workers, backoff=self.backoff)

    def call(self, function, *args, attempts: int = 3, **kwargs):
        """A call the script must wait for (a lookup before a run exists): a few quick
        retries when OneVizion fails transiently (no answer, 5xx), none when it refuses."""
        for attempt in range(attempts):
            try:
                return function(*args, **kwargs)
            except (UnreachableError, ApiError) as exc:
                transient = isinstance(exc, UnreachableError) or exc.transient
                if not transient or attempt == attempts - 1:
                    raise
                time.sleep(self.backoff.delay(attempt))

    def close(self) -> None:
        """The connection and the journal; the log is closed by run_script, which opened it."""
        self.api.close()
        self.journal.close()


def open_context(args, log) -> Context:
    """Parse the configuration files named by the flags and open the journal and the connection."""
    installation, warnings = config.load_passwords(args.passwords)
    for warning in warnings:
        log.warning(warning)
    if installation.verify is False:
        log.warning("TLS verification is off (VerifyTLS false in %s)", args.passwords)
    schema = config.load_schema(getattr(args, "schema", None))
    journal = Journal(os.path.join(args.log_dir, JOURNAL_FILE), schema_json=json.dumps(schema_as_dict(schema)))
    if journal.damaged:
        log.error("the journal was damaged and was moved aside to %s; a new one was started", journal.damaged)
    backoff = Backoff(base=float(os.environ.get("HUB_BACKOFF_BASE", "0.5")),
                      cap=float(os.environ.get("HUB_BACKOFF_CAP", "30")))
    return Context(installation, schema, OneVizion(installation, pool_size=SENDER_WORKERS), journal, log,
                   args.log_dir, backoff)


def run_script(args, script: str, body: Callable[[Context], int]) -> int:
    """The frame of each of the three scripts: its log, its context, `body(ctx)`, and the
    one place where an error becomes a message and an exit code (hub.cli.run_command)."""
    log = wrapper_log.setup(args.log_dir, script)
    opened: List[Context] = []

    def main() -> int:
        opened.append(open_context(args, log))
        return body(opened[0])

    try:
        return cli.run_command(main, logger=log, secrets=lambda: opened[0].installation.secrets())
    finally:
        for ctx in opened:
            ctx.close()
        wrapper_log.close(log)


def close_abandoned(ctx: Context, run) -> None:
    """A run whose wrapper died (kill -9, reboot): close it with Warnings and say from when output may be missing."""
    last = run["last_activity"] or run["started_at"]
    ctx.journal.end_output(run["run_key"])
    ctx.journal.add_note(run["run_key"], V.ERROR,
                         f"The wrapper (pid {run['owner_pid']}) stopped before the run ended; "
                         f"output after {ctx.now_text(last)} may be missing.")
    ctx.journal.finish_run(run["run_key"], {ctx.schema.run.status: ctx.schema.run.warnings,
                                            ctx.schema.run.finish: ctx.now_text(last)})
    ctx.log.warning("run %s: its wrapper (pid %s) is gone; closed as %s", run["run_key"], run["owner_pid"],
                    ctx.schema.run.warnings)


def replay(ctx: Context, deadline_seconds: float, retry_rejected: bool = False) -> dict:
    """Deliver what earlier invocations left in the journal; returns what was delivered and what remains."""
    if retry_rejected:
        ctx.journal.retry_rejected()
    delivered = {"records": 0, "statuses": 0}
    deadline = time.monotonic() + deadline_seconds
    for run in ctx.journal.orphans():
        if not ctx.journal.adopt(run):
            continue
        if run["supervised"] and run["final_fields"] is None:
            close_abandoned(ctx, run)
        sender = ctx.sender(workers=2)
        done = sender.deliver(run["run_key"], deadline)
        delivered["records"] += sender.delivered_records
        delivered["statuses"] += sender.delivered_statuses
        if not done:
            ctx.journal.release(run["run_key"])
            ctx.log.warning("run %s: replay incomplete: %s", run["run_key"], sender.last_error or sender.failure)
        if time.monotonic() >= deadline:
            break
    if delivered["records"] or delivered["statuses"]:
        ctx.log.info("replayed %d records and %d statuses from the journal", delivered["records"],
                     delivered["statuses"])
    return {**delivered, **{f"remaining_{k}": v for k, v in ctx.journal.owed().items()}}


def replay_in_background(ctx: Context, deadline_seconds: float) -> threading.Thread:
    """The wrapper's replay: in a thread, so the new run is not delayed by old ones."""
    thread = threading.Thread(target=_safe_replay, args=(ctx, deadline_seconds), name="replay", daemon=True)
    thread.start()
    return thread


def _safe_replay(ctx: Context, deadline_seconds: float) -> None:
    try:
        replay(ctx, deadline_seconds)
    except Exception:
        ctx.log.exception("replay of the journal failed")
