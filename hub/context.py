"""What every invocation of the three scripts sets up first: the log folder (checked before
anything runs), its log, Passwords.json and Schema.json, the journal, the connection and the
delivery engine (both only when needed), and the recovery of what earlier invocations left
(SPEC §5 "Nothing is lost").
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from hub import answers, cli, config, console as console_mod, vocabulary as V, wrapper_log
from hub.errors import HubError, UnreachableError, UsageError
from hub.journal import Conditions, Journal, Owner
from hub.retry import call_with_retries
from hub.schema import field_value, schema_as_dict
from hub.state import ItemState, Origin, RunProgress

TIMEZONE_CACHE = "timezone.json"
TIMEZONE_DAYS = 1


def prepare_log_dir(folder: str) -> str:
    """The log folder, created 0700 when missing; exit 2 naming it when it cannot be created or
    written (a full disk is not that: it is a condition the journal lives through)."""
    folder = os.path.abspath(folder)
    hint = "(choose another with --log-dir or $HUB_LOG_DIR)"
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"log folder {folder} is not a folder {hint}") from None
    except OSError as exc:
        raise UsageError(f"log folder {folder} cannot be created: {exc.strerror} {hint}") from None
    if not os.path.isdir(folder):
        raise UsageError(f"log folder {folder} is not a folder {hint}")
    # The folder, and what earlier invocations made in it (perhaps as another user: a manual run
    # as root, then cron): the lock folders, the spool, the journal, today's log.
    for sub in ("", "owners", "locks", "spool"):
        path = os.path.join(folder, sub) if sub else folder
        if sub and not os.path.isdir(path):
            continue
        probe = os.path.join(path, f".probe-{os.getpid()}")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EEXIST):
                raise UsageError(f"log folder {folder} cannot be written: {_why(folder, path, exc)} {hint}") from None
    from hub.journal import FILE
    for name in (FILE, FILE + "-wal", FILE + "-shm", time.strftime("hub-%Y-%m-%d.log")):
        path = os.path.join(folder, name)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise UsageError(f"log folder {folder} cannot be written: {_why(folder, path, exc)} {hint}") from None
    return folder


def _why(folder: str, path: str, exc: OSError) -> str:
    """What stops the hub writing `path` in `folder`: the error, and whose `path` is when it is
    someone else's."""
    name = "it" if path == folder else path
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return exc.strerror
    if uid == os.geteuid():
        return exc.strerror if path == folder else f"{path}: {exc.strerror}"
    try:
        import pwd
        owner = pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        owner = f"uid {uid}"
    return f"{name} belongs to {owner}: {exc.strerror}"


@dataclass
class Context:
    args: object
    installation: config.Installation
    schema: object
    log: object
    log_dir: str
    console: console_mod.Console
    conditions: Conditions
    journal: Journal
    owner: Owner
    _api: object = None
    _engine: object = None
    closers: List[Callable[[], None]] = field(default_factory=list)
    # Set when the hub closes: a takeover of older runs on another thread stops at the next run
    # instead of reaching for a journal and an engine that are going away.
    closing: threading.Event = field(default_factory=threading.Event)

    @property
    def api(self):
        if self._api is None:
            from hub.api import REQUEST_SECONDS, OneVizion
            # $HUB_REQUEST_SECONDS: the total deadline of one request (tests make it short).
            self._api = OneVizion(self.installation,
                                  request_seconds=float(os.environ.get("HUB_REQUEST_SECONDS", REQUEST_SECONDS)))
        return self._api

    @property
    def backoff_base(self) -> float:
        """Seconds before the first retry of a failed call ($HUB_BACKOFF_BASE: tests make it short)."""
        return float(os.environ.get("HUB_BACKOFF_BASE", "0.5"))

    @property
    def engine(self):
        """The delivery engine, started on first use (not once the hub closes: nothing would
        stop it)."""
        if self._engine is None:
            if self.closing.is_set():
                raise HubError("the hub is closing: no delivery starts now")
            from hub.delivery import Engine
            from hub.retry import Backoff, RetryPolicy, Throttle
            backoff = Backoff(base=self.backoff_base,
                              cap=float(os.environ.get("HUB_BACKOFF_CAP", "30")))
            self._engine = Engine(self.journal, self.api, self.log, self.console.say, RetryPolicy(backoff),
                                  Throttle(start=int(os.environ.get("HUB_CONNECTIONS", "8"))),
                                  secret_files=self.secret_files())
        return self._engine

    def settings(self, cwd: str = "", read_stdout: bool = True, upload_dirs=None,
                 max_upload_bytes: int = V.DEFAULT_MAX_UPLOAD_MB * 1_000_000) -> dict:
        """What a run keeps with it, so that a later replay (perhaps with another -s) builds its
        records and checks its files the same way."""
        from hub import uploads
        policy = uploads.UploadPolicy.build(upload_dirs, cwd or os.getcwd(), self.secret_files(), self.log_dir,
                                            max_upload_bytes)
        return {"schema": schema_as_dict(self.schema), "cwd": cwd, "read_stdout": read_stdout,
                "uploads": policy.as_dict(), "timezone": self.timezone_name()}

    def secret_files(self) -> List[str]:
        """The files the hub was given that are never uploaded: Passwords.json, and Integration.json
        (its Environment may hold secrets)."""
        given = [self.args.passwords, getattr(self.args, "integrations", None)]
        return [path for path in given if path]

    # -- time ---------------------------------------------------------------------------------

    def timezone_name(self) -> Optional[str]:
        """The zone date-times are written in: Passwords.json's Timezone, else the installation's
        PrimaryTimezone (asked once a day, remembered in the log folder), else None (the
        machine's zone)."""
        if self.installation.timezone_name:
            return self.installation.timezone_name
        if getattr(self, "_zone_known", False):
            return self._zone
        self._zone_known, self._zone = True, self._primary_timezone()
        return self._zone

    def _primary_timezone(self) -> Optional[str]:
        path = os.path.join(self.log_dir, TIMEZONE_CACHE)
        identity = self.installation.identity()
        try:
            with open(path, encoding="utf-8") as handle:
                cache = json.load(handle)
            known = cache.get(identity)
            if known and time.time() - known["at"] < TIMEZONE_DAYS * 86400:
                return known["zone"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            cache = {}
        from hub.api import CallFailed
        try:
            zone = str(self.api.system_param("PrimaryTimezone", seconds=10.0).get("value") or "")
        except CallFailed as failed:
            self.log.warning("PrimaryTimezone could not be read (%s); date-times are written in the machine's zone",
                             failed.answer.describe())
            return None
        from hub.zones import known
        if not known(zone):
            self.log.warning("PrimaryTimezone %r is not a zone the hub knows; date-times are written in the "
                             "machine's zone", zone)
            return None
        cache = cache if isinstance(cache, dict) else {}
        cache[identity] = {"zone": zone, "at": time.time()}
        try:
            temporary = f"{path}.{os.getpid()}"
            with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
                json.dump(cache, handle)
            os.replace(temporary, path)
        except OSError as exc:
            # Remembering is an optimisation (next time asks again); a half-written copy is not left.
            self.log.info("the PrimaryTimezone could not be remembered in %s: %s", path, exc)
            try:
                os.unlink(temporary)
            except OSError:
                pass
        self.log.info("date-times are written in the installation's PrimaryTimezone, %s", zone)
        return zone

    def now_text(self, at: Optional[float] = None) -> str:
        from hub.zones import format_time, zone
        return format_time(time.time() if at is None else at, zone(self.timezone_name()))

    # -- lookups before anything runs ---------------------------------------------------------------

    def lookup(self, function, *args, **kwargs):
        """A call the script waits for: a few quick retries when OneVizion fails transiently,
        none when it refuses; every failure becomes a HubError with its exit code."""
        from hub.api import CallFailed
        try:
            return call_with_retries(function, *args, base=self.backoff_base, **kwargs)
        except CallFailed as failed:
            raise self.lookup_error(failed) from None

    def lookup_error(self, failed) -> HubError:
        """The message and exit code for a read the script could not do before anything ran."""
        from hub.answers import REDIRECTED, Kind
        answer, host, where = failed.answer, self.api.host, failed.where.split("?")[0]
        portal = "is URL in Passwords.json the installation's address?"
        if answer.kind is Kind.CREDENTIALS:
            return UnreachableError(f"OneVizion at {host} refused the credentials in Passwords.json (401)")
        if answer.status is None:
            return UnreachableError(answer.text)
        if answer.status == 404:
            if not self.api.looks_like_onevizion():
                return UnreachableError(f"{self.installation.url} does not answer like a OneVizion installation "
                                        f"(404 to {where}): {portal}")
            return UsageError(f"OneVizion answered 404 to {where}: {answer.text}")
        if answer.status == 403:
            return UnreachableError(f"OneVizion refused {where}: this user lacks permission (403): {answer.text}")
        if 300 <= answer.status < 400:
            location = answer.text[len(REDIRECTED):] if answer.text.startswith(REDIRECTED) else answer.text
            return UnreachableError(f"OneVizion redirected {where} to {location}: {portal}")
        if 200 <= answer.status < 300:
            return UnreachableError(f"OneVizion at {host} answered {where} with {answer.text}: {portal}")
        return UnreachableError(f"OneVizion answered {answer.status} to {where}: {answer.text}")

    # -- recovery ------------------------------------------------------------------------------------

    def adopt_orphans(self, retry_refused: bool = False, keys: Optional[List[str]] = None,
                      first: Optional[List[str]] = None) -> List[str]:
        """Take over every run of this installation whose process is gone, and hand it to the
        engine: a wrapper's run without a final status is closed as abandoned first. Records
        whose run could not be told when they were journaled find it first."""
        from hub import spool as spool_mod
        if keys is None:
            keys_found = self.resolve_loose(retry_refused)
        else:
            keys_found = []
        adopted = []
        for row in self.journal.runs():
            if self.closing.is_set():
                break
            if keys is not None and row.run_key not in keys:
                continue
            if self.owner.alive(row.owner) or not self.journal.claim(row.run_key, row.owner, self.owner.id):
                continue
            previous, row.owner = row.owner, self.owner.id
            if self.closing.is_set():
                break   # claimed, but this process exits: the next invocation finds its owner gone
            if self._delivered_before(row):
                continue
            records = self.journal.records(row.run_key)
            spool = None
            folder = spool_folder(self.log_dir, row.run_key)
            if row.origin is Origin.WRAPPER:
                spool = spool_mod.Spool.recover(folder, row.parse.next_chunk,
                                                on_condition=self.conditions.begin, on_clear=self.conditions.end)
                if row.final.fields is None:
                    close_abandoned(self, row, previous, spool)
                elif row.output_open:
                    spool.end()
                    row.output_open = False
            run = RunProgress(row, records, spool,
                              sync=any(r.state is ItemState.PENDING for r in records) and not row.create.owed)
            run.retry["create"].ambiguous = True   # the gone process may have sent it
            run.first = [k for k in (first or ()) if k in run.records]
            if retry_refused:
                run.retry_refused()
                self.journal.put_records(row.run_key, [r for r in run.records.values()
                                                       if r.state is ItemState.PENDING])
            if self.closing.is_set():
                break
            self.journal.put_run(row)
            self.engine.add(run)
            adopted.append(row.run_key)
        if self.closing.is_set():
            return adopted
        return adopted + [k for k in keys_found if k not in adopted and k in self.engine.runs]

    def _delivered_before(self, row) -> bool:
        """A run its process delivered whole but could not remove from the journal (it exited
        while the disk was full): its mark says so; its row goes now, instead of the run being
        closed again as abandoned. Not when a helper script's record for it waits."""
        mark = self.journal.delivered_mark(row.run_key)
        if not os.path.exists(mark):
            return False
        if self.journal.records(row.run_key, origin="helper", owed_only=True):
            return False
        self.journal.drop_records([r.log_key for r in self.journal.records(row.run_key)])
        self.journal.drop_run(row.run_key)
        import shutil
        shutil.rmtree(spool_folder(self.log_dir, row.run_key), ignore_errors=True)
        if self.journal.flush(force=True):
            try:
                os.unlink(mark)
            except OSError:
                pass
        self.log.info("run %s was delivered by a process that could not say so in the journal; its row is gone now",
                      row.run_key)
        return True

    def resolve_loose(self, retry_refused: bool = False) -> List[str]:
        """Records journaled while OneVizion could not tell their run (AddingLog without -r): each
        goes to the run that was Running when it was journaled (see _loose_target). None: kept as
        refused (--status shows it). Credentials refused: they all wait, and stderr says so.
        Returns the runs that got records."""
        from hub.api import CallFailed
        from hub.state import RecordRow, RunRow
        rows = self.journal.loose()
        if retry_refused:
            rows += self.journal.loose(refused=True)
        found_keys = []
        for loose in rows:
            if self.closing.is_set():
                break
            at_text = self.now_text(loose["at"])[:19]
            try:
                target = self._loose_target(loose, at_text)
            except CallFailed as failed:
                if failed.answer.kind is answers.Kind.CREDENTIALS:
                    message = (f"{len(rows)} journaled record(s) still wait for their run: OneVizion refused the "
                               f"credentials ({failed.answer.describe()})")
                    self.log.error(message)
                    self.console.error(message)
                    break
                self.log.warning("a journaled record of integration %s still waits for its run: %s",
                                 loose["integration_key"], failed.answer.describe())
                continue
            if target is None:
                why = f"no run of integration {loose['integration_key']} was Running at {at_text}"
                self.journal.refuse_loose(loose["id"], why)
                self.log.error("a journaled record is kept as refused: %s", why)
                continue
            fields = json.loads(loose["fields"])
            log_key = f"{target.key}-{loose['log_suffix']}"
            fields["TRACKOR_KEY"] = log_key
            record = RecordRow(log_key, target.key, json.dumps(fields), "helper", file_path=loose["file_path"],
                               created_at=loose["at"])
            known = RunRow(run_key=target.key, installation=self.installation.identity(),
                           integration_key=loose["integration_key"], origin=Origin.KNOWN, settings=self.settings(),
                           started_at=loose["at"], owner=None, last_activity=loose["at"],
                           trackor_id=target.trackor_id)
            if self.journal.resolve_loose(loose["id"], record, known):
                found_keys.append(target.key)
                self.log.info("a journaled record found its run %s", target.key)
        if found_keys:
            self.adopt_orphans(keys=found_keys)
        return found_keys

    def _loose_target(self, loose, at_text: str):
        """$HUB_RUN_ID's run if that belongs to the record's integration, else the integration's
        latest run started before the record and not finished before it; None when there is none.
        Raises CallFailed."""
        from hub import lookups
        from hub.api import exact
        s = self.schema
        if loose["hint_run"]:
            remote = lookups.run_by_key(self, loose["hint_run"])
            if remote is not None and remote.integration_key == loose["integration_key"]:
                return remote
        runs = self.api.find(s.run.trackor_type,
                             {f"{s.integration.trackor_type}.TRACKOR_KEY": exact(loose["integration_key"])},
                             [s.run.start, s.run.finish], sort=f"{s.run.start}:desc", per_page=50)
        for run in runs:
            start = str(field_value(run, s.run.start) or "")[:19]
            finish = str(field_value(run, s.run.finish) or "")[:19]
            if start and start <= at_text and (not finish or finish >= at_text):
                return lookups.RemoteRun(run["TRACKOR_KEY"], run["TRACKOR_ID"], None, loose["integration_key"])
        return None

    def close(self) -> None:
        self.closing.set()
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must go on; the log says what failed
                self.log.exception("while closing")
        if self._engine is not None:
            self._engine.stop()
            if self._engine.internal_errors:
                # A defect of the hub's own: what it concerned stays in the journal, and it is said.
                self.console.error(f"the delivery engine met {self._engine.internal_errors} internal error(s); "
                                   f"what they concerned stays in the journal; the hub log ({self.log_dir}) "
                                   f"has the details")
        if self._api is not None:
            self._api.close()
        self.journal.close()
        self.owner.close()


def spool_folder(log_dir: str, run_key: str) -> str:
    import re
    return os.path.join(log_dir, "spool", re.sub(r"[^A-Za-z0-9_.-]", "_", run_key))


def close_abandoned(ctx: Context, row, previous_owner: Optional[str], spool) -> None:
    """A run whose wrapper died (kill -9, a reboot): closed with Warnings, saying from when
    output may be missing."""
    # First, before anything is written: a hub closing meanwhile refuses the engine, and the
    # run is then left whole for the next invocation (not half closed, closed twice after).
    schema = ctx.engine.schema(RunProgress(row))
    last = row.last_activity or row.started_at
    pid = previous_owner.rsplit("-", 2)[-2] if previous_owner and previous_owner.count("-") >= 2 else "?"
    spool.note(V.ERROR, f"The wrapper (pid {pid}) stopped before the run ended; output after "
                        f"{ctx.now_text(last)} may be missing.")
    spool.end()
    row.output_open = False
    row.final.fields = {schema.run.status: schema.run.warnings, schema.run.finish: ctx.now_text(last)}
    row.final.state = ItemState.PENDING
    ctx.log.warning("run %s: its wrapper is gone; closed as %s", row.run_key, schema.run.warnings)


def open_context(args, log, console, conditions) -> Context:
    installation, warnings = config.load_passwords(args.passwords)
    for warning in warnings:
        log.warning(warning)
    if installation.verify is False:
        log.warning("TLS verification is off (VerifyTLS false in %s)", args.passwords)
    schema = config.load_schema(getattr(args, "schema", None))
    owner = Owner(args.log_dir)
    journal = Journal(args.log_dir, installation.identity(), conditions,
                      check=getattr(args, "check_journal", True))
    return Context(args, installation, schema, log, args.log_dir, console, conditions, journal, owner)


def run_script(args, script: str, body: Callable[[Context], int]) -> int:
    """The frame of each of the three scripts: the log folder, the log, the context,
    `body(ctx)`, and the one place where an error becomes a message and an exit code."""
    console = console_mod.Console(console_mod.QUIET if getattr(args, "quiet", False) else
                                  console_mod.VERBOSE if getattr(args, "verbose", False) else console_mod.NORMAL)
    opened: List[Context] = []
    log = None

    def main() -> int:
        nonlocal log
        args.log_dir = prepare_log_dir(args.log_dir)
        conditions_box: List[Conditions] = []
        log = wrapper_log.setup(args.log_dir, script,
                                on_fault=lambda what, where: conditions_box[0].begin(what, where),
                                on_clear=lambda what, where: conditions_box[0].end(what, where))
        conditions = Conditions(console.say, log)
        conditions_box.append(conditions)
        opened.append(open_context(args, log, console, conditions))
        return body(opened[0])

    try:
        return cli.run_command(main, logger_source=lambda: log, secrets=lambda: opened[0].installation.secrets(),
                               say=console.line)
    finally:
        for ctx in opened:
            ctx.close()
        if log is not None:
            wrapper_log.close(log)
