"""The local journal: what the hub owes OneVizion, kept on disk until OneVizion confirms it.
It is what makes "nothing is lost" true, so its own faults must not lose anything either.

One SQLite file in the log folder (WAL mode: a crash mid-write never corrupts it, and
several wrappers and helper scripts write at once), holding the bookkeeping: runs (their
create, Last Run, final status, the parse position of their output) and Log records formed
from the output, each fixed before it is first sent. The child's raw output lives beside it
in plain files (hub.spool), which cost a write() instead of a transaction.

Writes go through one queue, in order. While the file takes them they are written at once;
when it cannot (the disk is full, another process holds it locked past the busy timeout, it
is read-only, an I/O error), that is a *condition*, not damage: the writes wait in memory, in
order, and are tried again every second; a record delivered meanwhile simply leaves the
queue, so the memory held is what is still owed. The condition is logged once, said once on
stderr, and remembered so the run can end with a Warning record saying what happened and for
how long. Only a file that fails SQLite's integrity check is set aside
(`journal.sqlite3.damaged-<time>`) and replaced by a fresh one.

Rows belong to one installation (its URL and user, or a digest of its access key): an
invocation sees and delivers only its own. A run belongs to the process that delivers it;
ownership is a lock file that process holds (log/owners/), so a run whose process is gone is
recovered whatever host name wrote it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from hub.spool import injected_fault
from hub.state import ItemState, Origin, ParseState, RecordRow, RunRow, Step

FILE = "journal.sqlite3"
VERSION = 2
RETRY_SECONDS = 1.0          # how often writes that wait in memory are tried again
VACUUM_PAGES = 256           # free pages (4 KiB each) kept for reuse while the journal is in use
VACUUM_SECONDS = 1.0         # how often, at most, free pages beyond that are given back
BUSY_SECONDS = 5.0           # how long a write waits for another process's lock before it is a condition
CLOSE_WAIT_SECONDS = 30.0    # at exit, how long waiting writes wait for another process's lock to go
WRITER_JOIN_SECONDS = 5.0    # at exit, how long the writer gets beyond the busy timeout to end its write
# Test hook, never set in production: a shorter busy timeout, so a test can hold the journal
# locked past it in seconds (the storage fault hook, HUB_TEST_STORAGE_FAULT, is in hub.spool).
if os.environ.get("HUB_TEST_BUSY_SECONDS"):
    BUSY_SECONDS = float(os.environ["HUB_TEST_BUSY_SECONDS"])

_INJECTED = {"full": "database or disk is full", "io": "disk I/O error", "locked": "database is locked"}


def _raise_injected() -> None:
    """A storage fault a test injects (hub.spool.injected_fault), as SQLite would report it."""
    fault = injected_fault()
    if fault in _INJECTED:
        raise sqlite3.OperationalError(f"{_INJECTED[fault]} (injected by HUB_TEST_STORAGE_FAULT)")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(
  run_key TEXT PRIMARY KEY,
  installation TEXT NOT NULL,
  integration_key TEXT NOT NULL,
  integration_id INTEGER,
  origin TEXT NOT NULL,
  owner TEXT,
  started_at REAL NOT NULL,
  last_activity REAL NOT NULL,
  settings TEXT NOT NULL,
  trackor_id INTEGER,
  remote_key TEXT,
  create_fields TEXT, create_state INTEGER NOT NULL, create_answer TEXT,
  last_run_fields TEXT, last_run_state INTEGER NOT NULL, last_run_answer TEXT,
  final_fields TEXT, final_state INTEGER NOT NULL, final_answer TEXT,
  run_file TEXT, run_file_state INTEGER NOT NULL, run_file_answer TEXT,
  output_open INTEGER NOT NULL,
  parse TEXT NOT NULL,
  notes TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS records(
  log_key TEXT PRIMARY KEY,
  run_key TEXT NOT NULL,
  origin TEXT NOT NULL,
  seq INTEGER,
  fields TEXT NOT NULL,
  file_path TEXT,
  state INTEGER NOT NULL,
  trackor_id INTEGER,
  answer TEXT,
  created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_run ON records(run_key, state);
CREATE TABLE IF NOT EXISTS loose(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  installation TEXT NOT NULL,
  integration_key TEXT NOT NULL,
  hint_run TEXT,
  log_suffix TEXT NOT NULL,
  at REAL NOT NULL,
  fields TEXT NOT NULL,
  file_path TEXT,
  state INTEGER NOT NULL,
  answer TEXT
);
"""

_RUN_COLUMNS = ("run_key", "installation", "integration_key", "integration_id", "origin", "owner", "started_at",
                "last_activity", "settings", "trackor_id", "remote_key", "create_fields", "create_state",
                "create_answer", "last_run_fields", "last_run_state", "last_run_answer", "final_fields",
                "final_state", "final_answer", "run_file", "run_file_state", "run_file_answer", "output_open",
                "parse", "notes")
_RECORD_COLUMNS = ("log_key", "run_key", "origin", "seq", "fields", "file_path", "state", "trackor_id", "answer",
                   "created_at")
_INSERT_RUN = f"INSERT INTO runs({','.join(_RUN_COLUMNS)}) VALUES({','.join('?' * len(_RUN_COLUMNS))})"
_INSERT_RUN_IF_NEW = _INSERT_RUN.replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)
_INSERT_RECORD = f"INSERT INTO records({','.join(_RECORD_COLUMNS)}) VALUES({','.join('?' * len(_RECORD_COLUMNS))})"

# What a sqlite3 error means: a condition the journal waits out, or damage.
FULL, IO_ERROR = "the disk is full", "the disk reported an I/O error"
LOCKED = "another process holds the journal locked"
CONDITIONS = (
    ("database or disk is full", FULL),
    ("locked", LOCKED),
    ("readonly", "the journal is read-only"),
    ("disk i/o error", IO_ERROR),
    ("unable to open", "the journal cannot be opened"),
    ("no such table", "the journal was changed by another version of the hub"),
)
DAMAGE = ("malformed", "not a database", "encrypted", "integrity check")


def condition_of(exc: BaseException) -> Optional[str]:
    """The condition an error is, or None when it is damage (or not a storage error at all)."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.DatabaseError) and any(word in text for word in DAMAGE):
        return None
    for marker, condition in CONDITIONS:
        if marker in text:
            return condition
    if isinstance(exc, OSError):
        return _os_condition(exc)
    if isinstance(exc, sqlite3.OperationalError):
        return f"the journal cannot be written ({text})"
    return None


def _os_condition(exc: OSError) -> str:
    import errno
    return {errno.ENOSPC: FULL, errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only", errno.EACCES: "the log folder cannot be written",
            errno.EIO: IO_ERROR}.get(exc.errno, f"the disk cannot be written ({exc.strerror})")


def disk_full(folder: str, margin: int = 1 << 20) -> bool:
    """Whether the file system of `folder` has less than `margin` bytes left for this user."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    blocks = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail
    return blocks * stat.f_frsize < margin


class _Replaced(Exception):
    """The file was moved aside on purpose (an earlier version's journal): open a new one."""


def is_damage(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and any(word in text for word in DAMAGE)


# -- conditions: what happened, for how long --------------------------------------------------

@dataclass
class Conditions:
    """Storage trouble seen by this process: each kind once on stderr and in the log, and the
    spans, so that each run can end with a Warning record saying what happened and for how long.

    A span is kept per place (the journal, a run's spool, the hub's log), since the same full
    disk begins and clears for each of them at its own moment; `since` merges them per kind."""

    say: Callable[[str], None]
    log: Any
    spans: List[List[Any]] = field(default_factory=list)   # [what, where, since, until or None]
    _said: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, what: str, where: str) -> None:
        with self._lock:
            if any(span[0] == what and span[1] == where and span[3] is None for span in self.spans):
                return
            self.spans.append([what, where, time.time(), None])
            first = what not in self._said
            self._said.add(what)
        self.log.warning("%s (%s): output waits in memory and is delivered from there; writing resumes when it "
                         "clears", what, where)
        if first:
            # Once per kind on stderr: the journal, the spool and the log each meet the same full disk.
            self.say(f"warning: {what} ({where}): output waits in memory and is delivered from there")

    def end(self, what: Optional[str] = None, where: Optional[str] = None) -> None:
        ended = []
        with self._lock:
            for span in self.spans:
                if span[3] is None and (what is None or span[0] == what) and (where is None or span[1] == where):
                    span[3] = time.time()
                    ended.append(span)
        for span in ended:   # outside the lock: the hub's log may itself report through begin/end
            self.log.info("%s (%s): cleared after %.0f s", span[0], span[1], span[3] - span[2])

    def since(self, start: float) -> List[Tuple[str, float, Optional[float]]]:
        """Each kind's periods that reach past `start`, as (what, since, until or None while it
        lasts): overlapping spans of one kind, from different places, are one period."""
        with self._lock:
            spans = [(w, s, u) for w, _, s, u in self.spans if u is None or u >= start]
        merged: List[List[Any]] = []
        for what, since, until in sorted(spans, key=lambda span: (span[0], span[1])):
            last = merged[-1] if merged and merged[-1][0] == what else None
            if last is not None and (last[2] is None or since <= last[2]):
                last[2] = None if last[2] is None or until is None else max(last[2], until)
            else:
                merged.append([what, since, until])
        return [(w, s, u) for w, s, u in sorted(merged, key=lambda span: span[1])]


# -- ownership by lock files ------------------------------------------------------------------

class Owner:
    """This process's identity as the deliverer of runs: a lock file it holds while it lives.
    The kernel drops the lock when the process dies, even by kill -9, on any host that shares
    the folder's locks."""

    def __init__(self, folder: str):
        self.folder = os.path.join(folder, "owners")
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.path = os.path.join(self.folder, self.id + ".lock")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def alive(self, owner: Optional[str]) -> bool:
        """Whether the process that owns `owner`'s lock file still holds it."""
        if not owner:
            return False
        if owner == self.id:
            return True
        path = os.path.join(self.folder, os.path.basename(owner) + ".lock")
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
        return False

    def forget(self, owner: str) -> None:
        """Remove a dead owner's lock file, holding its lock while doing so (never a live one's)."""
        path = os.path.join(self.folder, os.path.basename(owner) + ".lock")
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)


# -- the journal ------------------------------------------------------------------------------

class _Op:
    """One write, in order. `records` (a dict by Log ID) lets a delivered record leave a write
    that is still waiting, so that what waits in memory is only what is still owed."""

    __slots__ = ("statements", "records", "on_written")

    def __init__(self, statements: List[Tuple[str, Sequence[Any]]], records: Optional[Dict[str, tuple]] = None,
                 on_written: Optional[Callable[[], None]] = None):
        self.statements, self.records, self.on_written = statements, records, on_written


class Journal:
    """The journal file of one log folder, shared by the threads of one process.

    Writes are queued and written by one writer thread, many to a transaction, on a connection of
    its own; callers do not wait for the disk unless they ask to (`wait=True`: records must be in
    the file before they are first sent). Reads and the helper scripts' few synchronous writes use
    a second connection."""

    def __init__(self, folder: str, installation: str, conditions: Conditions, busy_timeout: Optional[float] = None,
                 check: bool = True, clock: Callable[[], float] = time.monotonic):
        self.folder = folder
        self.path = os.path.join(folder, FILE)
        self.installation = installation
        self.conditions = conditions
        self.log = conditions.log
        self.busy_timeout = BUSY_SECONDS if busy_timeout is None else busy_timeout
        self.clock = clock
        self.lock = threading.RLock()           # the reading connection
        self.changed = threading.Condition()    # the queue and the writer's state
        self.queue: List[_Op] = []
        self.written = 0                        # ops written so far (waiters compare their number)
        self.submitted = 0
        self.condition: Optional[str] = None
        self._next_try = 0.0
        self._deleted = 0
        self._next_vacuum = 0.0
        self._stopping = False
        self._closed = False                    # closed: a late write (a straggling thread's) is not taken
        self._generation = 0                    # files set aside so far: the writer's connection knows its own
        self._wdb_generation = 0
        self._urgent = False                    # a caller waits for the queue to be written
        self._writing = 0                       # ops at the head of the queue being written now
        self._writer: Optional[threading.Thread] = None
        self._wdb: Optional[sqlite3.Connection] = None
        self.set_aside: Optional[str] = None
        self.reset_count = 0         # how many times a damaged file was replaced (owners re-persist)
        self.db: Optional[sqlite3.Connection] = None
        self._open(check)

    # -- opening ------------------------------------------------------------------------------

    def _open(self, check: bool, writer_idle: bool = True) -> None:
        try:
            try:
                self.db = self._connect(check)
            except _Replaced:
                self.db = self._connect(check)
        except Exception as exc:  # noqa: BLE001 - sorted below: damage, a condition, or neither
            if is_damage(exc) and self._set_aside(exc, writer_idle):
                try:
                    self.db = self._connect(check)
                    return
                except Exception as again:  # noqa: BLE001
                    exc = again
            condition = condition_of(exc) or f"the journal cannot be used ({exc})"
            self.db = None
            self._degrade(condition)

    def _connect(self, check: bool) -> sqlite3.Connection:
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))   # 0600 before SQLite sees it
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None)
        try:
            _raise_injected()
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_size_limit=4194304")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != VERSION:
                self._prepare(db, version)
            if check and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("the journal failed its integrity check")
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection, version: int) -> None:
        """A new file gets the tables (with incremental vacuum, so it can give space back); a
        journal of the first version is replaced when it owes nothing, else kept aside."""
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "chunks" in tables:
            owed = db.execute("SELECT (SELECT count(*) FROM chunks) + (SELECT count(*) FROM lines WHERE state<2)"
                              " + (SELECT count(*) FROM runs WHERE final_done=0)").fetchone()[0]
            if owed:
                db.close()
                aside = f"{self.path}.v1-{int(time.time())}"
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(self.path + suffix):
                        os.replace(self.path + suffix, aside + suffix)
                self.log.error("the journal of an earlier version of the hub still owes %d items; it was kept "
                               "as %s (deliver it with that version), and a new journal started", owed, aside)
                self.conditions.say(f"warning: the journal of an earlier version of the hub still owes {owed} "
                                    f"items; it was kept as {aside}")
                raise _Replaced()
            for name in tables:
                db.execute(f'DROP TABLE "{name}"')
        if not tables or "chunks" in tables:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("VACUUM")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={VERSION}")

    def _let_go(self, writer_too: bool) -> None:
        """Close the reading connection, and the writer's too unless the writer may be using it
        (closing a connection under a running statement crashes the process). A close that fails
        has nothing left to keep."""
        for db in (self._wdb, self.db) if writer_too else (self.db,):
            if db is not None:
                try:
                    db.close()   # the last connection to close removes the WAL
                except sqlite3.Error:
                    pass
        self.db = None
        if writer_too:
            self._wdb = None

    def _set_aside(self, exc: BaseException, writer_idle: bool = True) -> bool:
        """Move a damaged file aside (a new one is started). `writer_idle` False: a read found the
        damage, and the writer may be inside a write on its own connection; that connection is
        left open (closing it under a running statement crashes the process). The file's
        generation tells the writer: it lets the connection go and writes the batch it was
        writing again, to the new file."""
        self._let_go(writer_too=writer_idle)
        aside = f"{self.path}.damaged-{int(time.time())}"
        try:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
        except OSError as failed:
            self._generation += 1   # a part may have moved: the writer's connection is not to be trusted
            # Left where it is: the next open meets the same damage and the journal stays in a
            # condition (output waits in memory) rather than this raising out of a write.
            self.log.error("the journal is damaged (%s) and could not be moved aside: %s", exc, failed)
            self._degrade(f"the journal is damaged and could not be moved aside ({failed.strerror or failed})")
            return False
        # After the move: a connection the writer opens from now on is to the new file, and one
        # it opened before is known stale (a needless reopen is harmless).
        self._generation += 1
        self.set_aside = aside
        self.reset_count += 1
        self.log.error("the journal was damaged and was moved aside to %s (it failed SQLite's integrity check: %s); "
                       "a new one was started", aside, exc)
        self.conditions.say(f"error: the journal was damaged and was moved aside to {aside}; a new one was started")
        return True

    def close(self) -> None:
        """Write what waits (as far as the disk lets), stop the writer, give free pages back,
        close the file. Writes that wait for another process's lock wait for it (up to
        CLOSE_WAIT_SECONDS): what waits in memory now (a run's final status, records) would be
        gone with this process. What the journal still cannot take is said on stderr."""
        with self.changed:
            self._stopping = True
            self.changed.notify_all()
        if self._writer is not None:
            self._writer.join(self.busy_timeout + WRITER_JOIN_SECONDS)
        with self.changed:
            deadline = time.monotonic() + CLOSE_WAIT_SECONDS   # real time: a test's clock may stand still
            # A writer that outlived its join (a very slow disk) still writes what is queued (it
            # was told to stop, and stops when the queue is empty): writing beside it, or closing
            # its connection under it, would break its transaction or crash the process.
            writer_alive = lambda: self._writer is not None and self._writer.is_alive()
            while writer_alive() and time.monotonic() < deadline:
                self.changed.wait(0.05)
            writer_busy = writer_alive()
            while not writer_busy:
                if self.queue:
                    self._write_queued(force=True)
                if not self.queue or self.condition != LOCKED or time.monotonic() >= deadline:
                    break
                self.changed.wait(RETRY_SECONDS)
            if self.queue:
                self._lost("its writer was still writing" if writer_busy else self.condition)
            elif self._wdb is not None:
                try:   # not worth waiting for another process's lock at exit
                    self._wdb.execute("PRAGMA busy_timeout=100")
                except sqlite3.Error:
                    pass
                self._vacuum(keep=0)
            self._closed = True
            if writer_busy:
                self.log.error("the journal's writer was still inside a write when the hub closed it; "
                               "its connection is left to the process's exit")
            # Under the reading lock: a thread still reading (a takeover of older runs) must not
            # have its connection closed under it (SQLite would crash the process); it finds none.
            with self.lock:
                self._let_go(writer_too=not writer_busy)

    def _queued(self) -> Tuple[int, List[str], List[str]]:
        """What waiting writes carry: (records OneVizion has not confirmed, runs whose row waits,
        runs whose removal waits). A run removed after its row needs neither: it was delivered."""
        records, rows, dropped = 0, [], []
        for op in self.queue:
            records += len(op.records or ())
            for sql, args in op.statements:
                key = args[0] if args else None
                if sql.startswith("INSERT INTO runs"):
                    rows, dropped = rows + [key], [k for k in dropped if k != key]
                elif sql.startswith("DELETE FROM runs"):
                    rows, dropped = [k for k in rows if k != key], dropped + [key]
        return records, sorted(set(rows)), sorted(set(dropped))

    def _lost(self, why: Optional[str]) -> None:
        """Writes the journal never took, said on stderr: this process takes them with it. A
        delivered run whose removal is among them gets a mark (an empty file needs no disk
        space), so that the next invocation drops its row instead of closing it as abandoned."""
        records, rows, dropped = self._queued()
        for run_key in dropped:
            try:
                os.close(os.open(self.delivered_mark(run_key), os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:
                self.log.error("run %s: delivered, but neither the journal nor a mark can say so (%s)", run_key, exc)
        what = [f"{records} record{'s' if records != 1 else ''} OneVizion has not confirmed"] if records else []
        if rows:
            what.append(f"the latest state of run{'s' if len(rows) != 1 else ''} {', '.join(rows)} (its final status)")
        self.log.error("the journal could not take %d writes before the hub exited (%s): %s", len(self.queue),
                       why, "; ".join(what + [f"delivered run {k} marked" for k in dropped])
                       or "bookkeeping only")
        if what:
            self.conditions.say(f"error: the journal could not keep {' and '.join(what)} before the hub exited "
                                f"({why}); the next invocation delivers the output its spool holds on "
                                f"disk, and closes a run it finds unfinished as abandoned")

    def delivered_mark(self, run_key: str) -> str:
        """The mark of a run delivered by a process that could not remove it from the journal."""
        import re
        return os.path.join(self.folder, "owners", re.sub(r"[^A-Za-z0-9_.-]", "_", run_key) + ".delivered")

    # -- conditions ------------------------------------------------------------------------------

    def _degrade(self, condition: str) -> None:
        if condition == IO_ERROR and disk_full(self.folder):
            # SQLite reports a full disk as an I/O error when its shared-memory index cannot grow.
            condition = FULL
        if self.condition is None:
            self.condition = condition
            self.conditions.begin(condition, self.path)
        self._next_try = self.clock() + RETRY_SECONDS

    def _recovered(self) -> None:
        if self.condition is not None:
            condition, self.condition = self.condition, None   # cleared first: what end() says sees it gone
            self.conditions.end(condition, self.path)

    def _fault(self, exc: BaseException, db: Optional[sqlite3.Connection]) -> None:
        """A write or read failed: damage sets the file aside; anything else is a condition."""
        if is_damage(exc):
            if db is not None:
                try:
                    ok = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                except sqlite3.Error:
                    ok = False
                if ok:
                    self._degrade(f"the journal reported {exc}")
                    return
            with self.lock:
                writer_idle = db is not None and db is self._wdb
                if self._set_aside(exc, writer_idle):
                    self._open(check=False, writer_idle=writer_idle)
            return
        condition = condition_of(exc)
        if condition is None:
            # Not storage trouble: a bug. Say it loudly; the caller's item stays owed in memory.
            raise exc
        self._degrade(condition)

    # -- writing ---------------------------------------------------------------------------------

    def _submit(self, op: _Op, wait: bool = False) -> bool:
        """Queue one write. `wait`: until it is in the file, or the journal is in a condition
        (then it waits in memory); True when it was written."""
        with self.changed:
            if self._closed:
                # Only a thread that outlived the hub's close writes now (its process is exiting):
                # what it would write is what a crash at this moment loses, and recovery handles.
                self.log.warning("a journal write after the journal was closed is not kept: %s", op.statements[:1])
                return False
            self.queue.append(op)
            self.submitted += 1
            number = self.submitted
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="journal-writer", daemon=True)
                self._writer.start()
            if wait:
                self._urgent = True
            self.changed.notify_all()
            if not wait:
                return False
            deadline = time.monotonic() + self.busy_timeout + 1.0
            while self.written < number and self.condition is None and time.monotonic() < deadline:
                self.changed.wait(0.05)
            return self.written >= number

    def _write_loop(self) -> None:
        with self.changed:
            while True:
                while not self.queue and not self._stopping:
                    self.changed.wait(1.0)
                if not self.queue or self._closed:
                    return
                if self.condition is not None and self.clock() < self._next_try and not self._stopping:
                    self.changed.wait(max(0.01, self._next_try - self.clock()))
                    continue
                if self.condition is not None and self._stopping:
                    return
                # A few milliseconds more gather more writes into one transaction, unless someone
                # waits for these (records about to be sent, a run another process must find).
                if not self._urgent:
                    self.changed.wait(0.005)
                self._urgent = False
                self._write_queued()
                if self._deleted:
                    self._vacuum()

    def _write_queued(self, force: bool = False) -> None:
        """Write every queued op in one transaction (called with `changed` held; the lock is let
        go while SQLite works, so callers keep queueing)."""
        if self._closed:
            return
        if self._wdb is not None and self._wdb_generation != self._generation:
            try:   # a read set the file aside: this connection is to the old one
                self._wdb.close()
            except sqlite3.Error:
                pass
            self._wdb = None
        if self._wdb is None:
            generation = self._generation
            try:
                self._wdb = self._connect(check=False)
                self._wdb_generation = generation
            except Exception as exc:  # noqa: BLE001
                self._fault_writing(exc)
                return
        batch = list(self.queue)
        self._writing = len(batch)
        self.changed.release()
        try:
            error = self._write_batch(batch)
        finally:
            self.changed.acquire()
            self._writing = 0
        if self._wdb_generation != self._generation:
            # A read set the file aside meanwhile: the batch went there; it is written again, to
            # the new file (on a new connection), before anything counts it written.
            return self._write_queued(force)
        if error is not None:
            self._fault_writing(error, batch)
            return
        del self.queue[:len(batch)]
        self.written += len(batch)
        self._recovered()
        for op in batch:
            if op.on_written is not None:
                try:
                    op.on_written()
                except Exception:  # noqa: BLE001 - a follow-up (deleting a spool segment) must not stop writing
                    self.log.exception("after a journal write")
        self.changed.notify_all()

    def _write_batch(self, batch: List[_Op]) -> Optional[BaseException]:
        db = self._wdb
        try:
            _raise_injected()
            db.execute("BEGIN IMMEDIATE")
            for op in batch:
                for sql, args in op.statements:
                    db.execute(sql, args)
                if op.records:
                    db.executemany(f"INSERT OR REPLACE INTO records({','.join(_RECORD_COLUMNS)}) VALUES"
                                   f"({','.join('?' * len(_RECORD_COLUMNS))})", list(op.records.values()))
            db.execute("COMMIT")
            return None
        except BaseException as exc:  # noqa: BLE001 - handed to _fault_writing
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return exc

    def _fault_writing(self, exc: BaseException, batch: Optional[List[_Op]] = None) -> None:
        try:
            self._fault(exc, self._wdb)
        except Exception:  # noqa: BLE001 - a write the code got wrong must not stop the others
            self.log.exception("a journal write failed (a bug); its batch is written one by one")
            for op in batch or []:
                if self._write_batch([op]) is not None:
                    self.log.error("a journal write was dropped: %s", op.statements[:1])
                self.queue.remove(op)
                self.written += 1
            self.changed.notify_all()
            return
        if self._wdb is not None and self.db is None:
            self._wdb.close()
            self._wdb = None
        self.changed.notify_all()

    def _vacuum(self, keep: int = VACUUM_PAGES) -> None:
        """Give the file's free pages beyond `keep` back to the file system (at most once every
        VACUUM_SECONDS while the journal is in use; every page at close): delivered records leave
        while the run goes on, and after a run the journal holds little more than what is owed."""
        self._deleted = 0
        if self._wdb is None or self.condition is not None:
            return
        if keep and time.monotonic() < self._next_vacuum:
            return
        self._next_vacuum = time.monotonic() + VACUUM_SECONDS
        try:
            free = self._wdb.execute("PRAGMA freelist_count").fetchone()[0]
            if free > keep:
                # executescript, not execute: each step of this pragma frees one page, and the
                # sqlite3 module steps a pragma once through execute().
                self._wdb.executescript(f"PRAGMA incremental_vacuum({free - keep});")
        except sqlite3.Error as exc:
            self.log.warning("the journal could not give space back: %s", exc)

    def flush(self, force: bool = False) -> bool:
        """Wait until what is queued is written (or the journal is in a condition); True when
        nothing waits any more."""
        with self.changed:
            if force and self.queue and self._writer is None:
                self._write_queued(force=True)
            target = self.submitted
            self._urgent = True
            deadline = time.monotonic() + self.busy_timeout + 1.0
            while self.written < target and (self.condition is None or force) and time.monotonic() < deadline:
                self.changed.notify_all()
                self.changed.wait(0.05)
                if force and self.condition is not None:
                    break
            return not self.queue

    def tick(self) -> None:
        """Called now and then by the delivery engine: what waits is written (the writer retries
        on its own), free pages go back to the file system."""
        self._settle()
        with self.changed:
            if self._deleted and not self._writing:
                self._vacuum()

    def waiting_writes(self) -> int:
        return len(self.queue)

    def holds_owed(self) -> bool:
        """Whether writes that only this process holds carry something still owed: records
        OneVizion has not confirmed, or a run's row (its final status). Lost if it exits now."""
        with self.changed:
            if self.condition is None:
                return False   # a healthy journal writes what is queued (at close at the latest)
            records, rows, _ = self._queued()
            return bool(records or rows)

    # -- the writes the hub makes -------------------------------------------------------------------

    def put_run(self, row: RunRow, wait: bool = False) -> bool:
        """Insert or replace a run's whole row (a run opened, a run-level item changed). `wait`:
        until it is in the file (a new run other processes must find: a wrapped child's helper
        script, a RunController key just printed)."""
        with self.changed:
            return self._put_run(row, wait)

    def _put_run(self, row: RunRow, wait: bool) -> bool:
        # The row is read and queued under one lock: two threads writing the same run's row queue
        # their copies in the order they read them, so the newest is written last.
        values = _run_values(row)
        # The parse position (and the time of the last output) belongs to put_records alone: a row
        # written from another thread must never carry an older one back over it.
        updates = ", ".join(f"{c}=excluded.{c}" for c in _RUN_COLUMNS if c not in ("run_key", "parse", "last_activity"))
        return self._submit(_Op([(f"INSERT INTO runs({','.join(_RUN_COLUMNS)}) VALUES"
                                  f"({','.join('?' * len(_RUN_COLUMNS))}) ON CONFLICT(run_key) DO UPDATE SET "
                                  f"{updates}", values)]), wait)

    def put_records(self, run_key: str, records: Sequence[RecordRow], parse: Optional[ParseState] = None,
                    last_activity: Optional[float] = None, on_written: Optional[Callable[[], None]] = None,
                    wait: bool = False, run_file: Optional[Tuple[int, str]] = None) -> bool:
        """Records formed from the output, with the parse position they lead to and the run's
        File they make owed (`run_file`: the latest printed file's seq and path), atomically.
        `wait`: return once they are in the file (True), or waiting in memory (False)."""
        statements = []
        if parse is not None:
            statements.append(("UPDATE runs SET parse=?, last_activity=max(last_activity, ?) WHERE run_key=?",
                               (parse.dump(), last_activity or 0.0, run_key)))
        if run_file is not None:
            statements.append(("UPDATE runs SET run_file=?, run_file_state=?, run_file_answer=NULL WHERE run_key=?",
                               (json.dumps(list(run_file)), int(ItemState.PENDING), run_key)))
        return self._submit(_Op(statements, {r.log_key: _record_values(r) for r in records}, on_written), wait)

    def set_record(self, record: RecordRow) -> None:
        """A record's state changed (created with its file owed, refused)."""
        with self.changed:
            waiting = self._waiting_record(record.log_key)
            if waiting is not None:
                waiting.records[record.log_key] = _record_values(record)
                return
            self._submit(_Op([("UPDATE records SET state=?, trackor_id=?, answer=? WHERE log_key=?",
                               (int(record.state), record.trackor_id, record.answer, record.log_key))]))

    def drop_records(self, log_keys: Iterable[str]) -> None:
        """Records OneVizion confirmed leave the journal (or a wait in memory for it)."""
        with self.changed:
            keys = []
            for log_key in log_keys:
                waiting = self._waiting_record(log_key)
                if waiting is not None:
                    del waiting.records[log_key]
                else:
                    keys.append(log_key)
            if keys:
                self._deleted += len(keys)
                self._submit(_Op([("DELETE FROM records WHERE log_key=?", (k,)) for k in keys]))

    def drop_run(self, run_key: str) -> None:
        self._deleted += 1
        # Only when no record of the run is left: a helper script may have added one just now.
        self._submit(_Op([("DELETE FROM runs WHERE run_key=? AND NOT EXISTS (SELECT 1 FROM records WHERE run_key=?)",
                           (run_key, run_key))]))

    def discard_run(self, run_key: str) -> None:
        """--discard: a run and everything it owes leave the journal for good."""
        self._submit(_Op([("DELETE FROM records WHERE run_key=?", (run_key,)),
                          ("DELETE FROM runs WHERE run_key=?", (run_key,))]))

    def _waiting_record(self, log_key: str) -> Optional[_Op]:
        # Only writes that have not reached the file can hold a record: a few while the journal is
        # healthy, all of a condition's otherwise. A batch being written is not touched: the
        # first of the queue are that batch while the writer works, so only ops after it are.
        if self.condition is None:
            return None
        for op in reversed(self.queue[self._writing:]):
            if op.records and log_key in op.records:
                return op
        return None

    # -- the helper scripts' own writes (at once, not queued: the script waits for the answer) ---------

    def add_helper_record(self, record: RecordRow, known: RunRow) -> Optional[RunRow]:
        """A helper's record, in one transaction with the run row it needs: the run's own row
        when the journal has it (returned: its owner delivers it), else `known` (None returned).
        Raises the storage error when the journal cannot take it now."""
        with self._at_once() as db:
            rows = db.execute("SELECT * FROM runs WHERE run_key=? AND installation=?",
                              (record.run_key, self.installation))
            names = [d[0] for d in rows.description]
            found = rows.fetchone()
            if found is None:
                db.execute(_INSERT_RUN, _run_values(known))
            db.execute(_INSERT_RECORD, _record_values(record))
        return _run_row(dict(zip(names, found))) if found is not None else None

    @contextlib.contextmanager
    def _at_once(self):
        """One transaction on the reading connection, for the helper scripts' writes that must be
        in the file before they go on (not queued); raises when the journal cannot take it now."""
        self._settle()
        with self.lock:
            if self.db is None or self.condition is not None:
                raise sqlite3.OperationalError(self.condition or "the journal cannot be written")
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise

    def add_loose(self, integration_key: str, hint_run: Optional[str], log_suffix: str, at: float,
                  fields_json: str, file_path: Optional[str]) -> int:
        """A record whose run could not be told (OneVizion unreachable, no -r): it goes to the run
        that was Running at `at`, found when it is delivered."""
        self._settle()
        with self.lock:
            if self.db is None or self.condition is not None:
                raise sqlite3.OperationalError(self.condition or "the journal cannot be written")
            return self.db.execute("INSERT INTO loose(installation, integration_key, hint_run, log_suffix, at, fields,"
                                   " file_path, state) VALUES(?,?,?,?,?,?,?,0)",
                                   (self.installation, integration_key, hint_run, log_suffix, at, fields_json,
                                    file_path)).lastrowid

    def loose(self, refused: bool = False) -> List[Dict[str, Any]]:
        """Records whose run is still to be told (or, `refused`, that found none)."""
        return self._rows("SELECT * FROM loose WHERE installation=? AND state=? ORDER BY id",
                          (self.installation, 3 if refused else 0))

    def drop_loose(self, loose_id: int) -> None:
        self._submit(_Op([("DELETE FROM loose WHERE id=?", (loose_id,))]))

    def resolve_loose(self, loose_id: int, record: RecordRow, known: RunRow) -> bool:
        """A loose record found its run: it becomes that run's record, once (False when another
        process resolved it first, or the journal cannot take it now: it stays loose)."""
        try:
            with self._at_once() as db:
                if db.execute("DELETE FROM loose WHERE id=? AND state=0", (loose_id,)).rowcount != 1:
                    return False   # another process resolved it (nothing else was written)
                db.execute(_INSERT_RUN_IF_NEW, _run_values(known))
                db.execute(_INSERT_RECORD, _record_values(record))
        except sqlite3.Error as exc:
            self.log.warning("a loose record could not be given its run now: %s", exc)
            return False
        return True

    def refuse_loose(self, loose_id: int, answer: str) -> None:
        self._submit(_Op([("UPDATE loose SET state=3, answer=? WHERE id=?", (answer, loose_id))]))

    # -- ownership ----------------------------------------------------------------------------------

    def claim(self, run_key: str, expected: Optional[str], owner: str) -> bool:
        """Take a run over from a gone owner; False when another process took it first (or the
        journal cannot be written now: then nobody can)."""
        self._settle()
        with self.lock:
            if self.db is None or self.condition is not None:
                return False
            try:
                changed = self.db.execute("UPDATE runs SET owner=? WHERE run_key=? AND owner IS ?",
                                          (owner, run_key, expected)).rowcount
            except Exception as exc:  # noqa: BLE001
                self._fault(exc, self.db)
                return False
            return changed == 1

    # -- reading ------------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Reads and synchronous writes see this process's own queued writes: what is queued is
        written first (at once; a journal in a condition does not make them wait)."""
        if self.queue and threading.current_thread() is not self._writer:
            self.flush()

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> List[sqlite3.Row]:
        self._settle()
        with self.lock:
            if self.db is None:
                return []
            try:
                cursor = self.db.execute(sql, args)
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
            except Exception as exc:  # noqa: BLE001
                self._fault(exc, self.db)
                return []

    def runs(self, run_key: Optional[str] = None, every_installation: bool = False) -> List[RunRow]:
        """Runs of this installation (or one by key), oldest first."""
        where, args = [], []
        if not every_installation:
            where.append("installation=?")
            args.append(self.installation)
        if run_key is not None:
            where.append("run_key=?")
            args.append(run_key)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY started_at"
        return [_run_row(row) for row in self._rows(sql, args)]

    def run(self, run_key: str) -> Optional[RunRow]:
        found = self.runs(run_key)
        return found[0] if found else None

    def records(self, run_key: str, origin: Optional[str] = None, owed_only: bool = False) -> List[RecordRow]:
        sql, args = "SELECT * FROM records WHERE run_key=?", [run_key]
        if origin:
            sql += " AND origin=?"
            args.append(origin)
        if owed_only:
            sql += " AND state IN (0, 1)"
        return [_record_row(row) for row in self._rows(sql + " ORDER BY seq, log_key", args)]

    def helper_records(self, run_keys: Sequence[str]) -> List[RecordRow]:
        """Owed records the helper scripts added to any of these runs (one read for all)."""
        if not run_keys:
            return []
        marks = ",".join("?" * len(run_keys))
        return [_record_row(row) for row in self._rows(
            f"SELECT * FROM records WHERE origin='helper' AND state IN (0, 1) AND run_key IN ({marks})",
            list(run_keys))]

    def record(self, log_key: str) -> Optional[RecordRow]:
        found = self._rows("SELECT * FROM records WHERE log_key=?", (log_key,))
        return _record_row(found[0]) if found else None

    def other_installations(self) -> int:
        found = self._rows("SELECT count(*) AS n FROM runs WHERE installation<>?", (self.installation,))
        return found[0]["n"] if found else 0

    def data_version(self) -> int:
        """Changes whenever another process commits to the journal (cheap to ask)."""
        found = self._rows("PRAGMA data_version")
        return list(found[0].values())[0] if found else -1

    def size(self) -> int:
        """The journal's bytes on disk (the file and its WAL)."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total



def disk_usage(folder: str) -> Dict[str, int]:
    """The journal's bytes on disk in a log folder, by part: "sqlite" (journal.sqlite3), "wal"
    and "shm" (its write-ahead log and shared-memory index), "spool" (raw output in segment
    files, log/spool/), and "total". Sizes as the files say (st_size); a missing part is 0.
    For tests and the benchmark: it reads only the file system, never the journal."""
    usage = {"sqlite": 0, "wal": 0, "shm": 0, "spool": 0}
    base = os.path.join(folder, FILE)
    for part, suffix in (("sqlite", ""), ("wal", "-wal"), ("shm", "-shm")):
        try:
            usage[part] = os.stat(base + suffix).st_size
        except OSError:
            pass
    for root, _, names in os.walk(os.path.join(folder, "spool")):
        for name in names:
            try:
                usage["spool"] += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass   # a segment deleted while we looked
    usage["total"] = sum(usage.values())
    return usage


def _dump(value: Optional[Dict[str, Any]]) -> Optional[str]:
    return None if value is None else json.dumps(value)


def _load(text: Optional[str]) -> Optional[Dict[str, Any]]:
    return None if text is None else json.loads(text)


def _run_values(row: RunRow) -> tuple:
    return (row.run_key, row.installation, row.integration_key, row.integration_id, row.origin.value, row.owner,
            row.started_at, row.last_activity, json.dumps(row.settings), row.trackor_id, row.remote_key,
            _dump(row.create.fields), int(row.create.state), row.create.answer,
            _dump(row.last_run.fields), int(row.last_run.state), row.last_run.answer,
            _dump(row.final.fields), int(row.final.state), row.final.answer,
            json.dumps(list(row.run_file)) if row.run_file else None, int(row.run_file_state), row.run_file_answer,
            int(row.output_open), row.parse.dump(), json.dumps(row.notes))


def _run_row(data: Dict[str, Any]) -> RunRow:
    run_file = json.loads(data["run_file"]) if data["run_file"] else None
    return RunRow(
        run_key=data["run_key"], installation=data["installation"], integration_key=data["integration_key"],
        origin=Origin(data["origin"]), settings=json.loads(data["settings"]), started_at=data["started_at"],
        integration_id=data["integration_id"], owner=data["owner"], last_activity=data["last_activity"],
        trackor_id=data["trackor_id"], remote_key=data["remote_key"],
        create=Step(_load(data["create_fields"]), ItemState(data["create_state"]), data["create_answer"]),
        last_run=Step(_load(data["last_run_fields"]), ItemState(data["last_run_state"]), data["last_run_answer"]),
        final=Step(_load(data["final_fields"]), ItemState(data["final_state"]), data["final_answer"]),
        run_file=(int(run_file[0]), run_file[1]) if run_file else None,
        run_file_state=ItemState(data["run_file_state"]), run_file_answer=data["run_file_answer"],
        output_open=bool(data["output_open"]), parse=ParseState.load(data["parse"]),
        notes=json.loads(data["notes"] or "{}"))


def _record_values(record: RecordRow) -> tuple:
    return (record.log_key, record.run_key, record.origin, record.seq, record.fields_json, record.file_path,
            int(record.state), record.trackor_id, record.answer, record.created_at)


def _record_row(data: Dict[str, Any]) -> RecordRow:
    return RecordRow(log_key=data["log_key"], run_key=data["run_key"], fields_json=data["fields"],
                     origin=data["origin"], seq=data["seq"], file_path=data["file_path"],
                     state=ItemState(data["state"]), trackor_id=data["trackor_id"], answer=data["answer"],
                     created_at=data["created_at"])
