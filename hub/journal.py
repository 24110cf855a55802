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

import fcntl
import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from hub.state import ItemState, Origin, ParseState, RecordRow, RunRow, Step

FILE = "journal.sqlite3"
VERSION = 2
RETRY_SECONDS = 1.0          # how often writes that wait in memory are tried again
VACUUM_PAGES = 256           # free pages worth giving back to the file system (up to 4x as many at a time)

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
_PUT_RUN = (f"INSERT INTO runs({','.join(_RUN_COLUMNS)}) VALUES({','.join('?' * len(_RUN_COLUMNS))}) "
            f"ON CONFLICT(run_key) DO UPDATE SET "
            + ", ".join(f"{c}=excluded.{c}" for c in _RUN_COLUMNS if c not in ("run_key", "parse", "last_activity"))
            + ", last_activity=max(last_activity, excluded.last_activity)")
_RECORD_COLUMNS = ("log_key", "run_key", "origin", "seq", "fields", "file_path", "state", "trackor_id", "answer",
                   "created_at")

# What a sqlite3 error means: a condition the journal waits out, or damage.
CONDITIONS = (
    ("database or disk is full", "the disk is full"),
    ("locked", "another process holds the journal locked"),
    ("readonly", "the journal is read-only"),
    ("disk i/o error", "the disk reported an I/O error"),
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
    return {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only", errno.EACCES: "the log folder cannot be written",
            errno.EIO: "the disk reported an I/O error"}.get(exc.errno, f"the disk cannot be written ({exc.strerror})")


class _Replaced(Exception):
    """The file was moved aside on purpose (an earlier version's journal): open a new one."""


def is_damage(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and any(word in text for word in DAMAGE)


# -- conditions: what happened, for how long --------------------------------------------------

@dataclass
class Conditions:
    """Storage trouble seen by this process: each kind once on stderr and in the log, and the
    spans, so that each run can end with a Warning record saying what happened and for how long."""

    say: Callable[[str], None]
    log: Any
    spans: List[List[Any]] = field(default_factory=list)   # [what, since, until or None]
    _said: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, what: str, where: str) -> None:
        with self._lock:
            if any(span[0] == what and span[2] is None for span in self.spans):
                return
            self.spans.append([what, time.time(), None])
            first = what not in self._said
            self._said.add(what)
        self.log.warning("%s (%s): output waits in memory and is delivered from there; writing resumes when it "
                         "clears", what, where)
        if first:
            self.say(f"warning: {what} ({where}): output waits in memory and is delivered from there")

    def end(self, what: Optional[str] = None) -> None:
        with self._lock:
            for span in self.spans:
                if span[2] is None and (what is None or span[0] == what):
                    span[2] = time.time()
                    self.log.info("%s: cleared after %.0f s", span[0], span[2] - span[1])

    def since(self, start: float) -> List[Tuple[str, float, Optional[float]]]:
        with self._lock:
            return [(w, s, u) for w, s, u in self.spans if u is None or u >= start]


# -- ownership by lock files ------------------------------------------------------------------

class Owner:
    """This process's identity as the deliverer of runs: a lock file it holds while it lives.
    The kernel drops the lock when the process dies, even by kill -9, on any host that shares
    the folder's locks."""

    def __init__(self, folder: str):
        self.folder = os.path.join(folder, "owners")
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
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
    """The journal file of one log folder, shared by the threads of one process."""

    def __init__(self, folder: str, installation: str, conditions: Conditions, busy_timeout: float = 5.0,
                 check: bool = True, clock: Callable[[], float] = time.monotonic):
        self.folder = folder
        self.path = os.path.join(folder, FILE)
        self.installation = installation
        self.conditions = conditions
        self.log = conditions.log
        self.busy_timeout = busy_timeout
        self.clock = clock
        self.lock = threading.RLock()
        self.queue: List[_Op] = []
        self.condition: Optional[str] = None
        self._next_try = 0.0
        self._deleted = 0
        self.set_aside: Optional[str] = None
        self.reset_count = 0         # how many times a damaged file was replaced (owners re-persist)
        self.db: Optional[sqlite3.Connection] = None
        self._open(check)

    # -- opening ------------------------------------------------------------------------------

    def _open(self, check: bool) -> None:
        try:
            try:
                self.db = self._connect(check)
            except _Replaced:
                self.db = self._connect(check)
        except Exception as exc:  # noqa: BLE001 - sorted below: damage, a condition, or neither
            if is_damage(exc):
                self._set_aside(exc)
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

    def _set_aside(self, exc: BaseException) -> None:
        aside = f"{self.path}.damaged-{int(time.time())}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, aside + suffix)
        self.set_aside = aside
        self.reset_count += 1
        self.log.error("the journal was damaged and was moved aside to %s (it failed SQLite's integrity check: %s); "
                       "a new one was started", aside, exc)
        self.conditions.say(f"error: the journal was damaged and was moved aside to {aside}; a new one was started")

    def close(self) -> None:
        with self.lock:
            self.flush(force=True)
            if self.queue:
                self.log.error("the journal could not take %d writes before the hub exited (%s)", len(self.queue),
                               self.condition)
            if self.db is not None:
                self.db.close()
                self.db = None

    # -- conditions ------------------------------------------------------------------------------

    def _degrade(self, condition: str) -> None:
        if self.condition is None:
            self.condition = condition
            self.conditions.begin(condition, self.path)
        self._next_try = self.clock() + RETRY_SECONDS

    def _recovered(self) -> None:
        if self.condition is not None:
            self.conditions.end(self.condition)
            self.condition = None

    def _fault(self, exc: BaseException) -> None:
        """A write or read failed: damage sets the file aside; anything else is a condition."""
        if is_damage(exc):
            if self.db is not None:
                try:
                    ok = self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                except sqlite3.Error:
                    ok = False
                if ok:
                    self._degrade(f"the journal reported {exc}")
                    return
                self.db.close()
                self.db = None
            self._set_aside(exc)
            self._open(check=False)
            return
        condition = condition_of(exc)
        if condition is None:
            # Not storage trouble: a bug. Say it loudly; the caller's item stays owed in memory.
            raise exc
        self._degrade(condition)

    # -- writing ---------------------------------------------------------------------------------

    def _submit(self, op: _Op) -> None:
        with self.lock:
            self.queue.append(op)
            if len(self.queue) == 1 or self.clock() >= self._next_try:
                self.flush()

    def flush(self, force: bool = False) -> bool:
        """Write what waits, in order; True when nothing waits any more."""
        with self.lock:
            if not self.queue:
                return True
            if not force and self.condition is not None and self.clock() < self._next_try:
                return False
            if self.db is None:
                self._open(check=False)
                if self.db is None:
                    return False
            while self.queue:
                op = self.queue[0]
                try:
                    self._write(op)
                except Exception as exc:  # noqa: BLE001 - a condition or damage; anything else is a bug
                    try:
                        self._fault(exc)
                    except Exception:  # noqa: BLE001 - a write the code got wrong must not stop the others
                        self.log.exception("a journal write failed and was dropped (a bug)")
                        self.queue.pop(0)
                        continue
                    if self.db is None or self.condition is not None:
                        return False
                    continue
                self.queue.pop(0)
                if op.on_written is not None:
                    op.on_written()
            self._recovered()
            return True

    def _write(self, op: _Op) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in op.statements:
                db.execute(sql, args)
            if op.records:
                db.executemany(f"INSERT OR REPLACE INTO records({','.join(_RECORD_COLUMNS)}) VALUES"
                               f"({','.join('?' * len(_RECORD_COLUMNS))})", list(op.records.values()))
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def tick(self) -> None:
        """Called now and then by the delivery engine: retry waiting writes, give space back."""
        if self.queue:
            self.flush()
        if self._deleted and self.condition is None:
            with self.lock:
                try:
                    # Free pages, not deleted rows, decide: a few merged records of 65,000 characters
                    # free as much as thousands of short ones.
                    if self.db is not None and self.db.execute("PRAGMA freelist_count").fetchone()[0] >= VACUUM_PAGES:
                        self._deleted = 0
                        # Each step of the pragma frees one page, and the sqlite3 module's execute()
                        # steps it once: executescript() runs it to its end.
                        self.db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES * 4});")
                except sqlite3.Error as exc:
                    self._deleted = 0
                    self.log.warning("the journal could not give space back: %s", exc)

    def waiting_writes(self) -> int:
        return len(self.queue)

    # -- the writes the hub makes -------------------------------------------------------------------

    def put_run(self, row: RunRow) -> None:
        """Insert a run's whole row, or update it (a run-level item changed). The parse position of
        a run already in the journal is put_records' alone: a snapshot of the row taken while a
        parse was being written must not move it back (the run could then never end)."""
        values = _run_values(row)
        self._submit(_Op([(_PUT_RUN, values)]))

    def put_records(self, run_key: str, records: Sequence[RecordRow], parse: Optional[ParseState] = None,
                    last_activity: Optional[float] = None, on_written: Optional[Callable[[], None]] = None) -> None:
        """Records formed from the output, with the parse position they lead to, atomically."""
        statements = []
        if parse is not None:
            statements.append(("UPDATE runs SET parse=?, last_activity=max(last_activity, ?) WHERE run_key=?",
                               (parse.dump(), last_activity or 0.0, run_key)))
        self._submit(_Op(statements, {r.log_key: _record_values(r) for r in records}, on_written))

    def set_record(self, record: RecordRow) -> None:
        """A record's state changed (created with its file owed, refused)."""
        with self.lock:
            waiting = self._waiting_record(record.log_key)
            if waiting is not None:
                waiting.records[record.log_key] = _record_values(record)
                return
            self._submit(_Op([("UPDATE records SET state=?, trackor_id=?, answer=? WHERE log_key=?",
                               (int(record.state), record.trackor_id, record.answer, record.log_key))]))

    def drop_records(self, log_keys: Iterable[str]) -> None:
        """Records OneVizion confirmed leave the journal (or a wait in memory for it)."""
        with self.lock:
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
        # Only writes that have not reached the file can hold a record: at most a few while the
        # journal is healthy (the one being written), all of a condition's otherwise.
        for op in reversed(self.queue):
            if op.records and log_key in op.records:
                return op
        return None

    # -- the helper scripts' own writes (at once, not queued: the script waits for the answer) ---------

    def add_helper_record(self, record: RecordRow, known: RunRow) -> Optional[RunRow]:
        """A helper's record, in one transaction with the run row it needs: the run's own row
        when the journal has it (returned: its owner delivers it), else `known` (None returned).
        Raises the storage error when the journal cannot take it now."""
        with self.lock:
            if self.db is None or self.queue:
                raise sqlite3.OperationalError(self.condition or "the journal cannot be written")
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute("SELECT * FROM runs WHERE run_key=? AND installation=?",
                                  (record.run_key, self.installation))
                names = [d[0] for d in rows.description]
                found = rows.fetchone()
                if found is None:
                    db.execute(f"INSERT INTO runs({','.join(_RUN_COLUMNS)}) VALUES({','.join('?' * len(_RUN_COLUMNS))})",
                               _run_values(known))
                db.execute(f"INSERT INTO records({','.join(_RECORD_COLUMNS)}) VALUES"
                           f"({','.join('?' * len(_RECORD_COLUMNS))})", _record_values(record))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return _run_row(dict(zip(names, found))) if found is not None else None

    def add_loose(self, integration_key: str, hint_run: Optional[str], log_suffix: str, at: float,
                  fields_json: str, file_path: Optional[str]) -> int:
        """A record whose run could not be told (OneVizion unreachable, no -r): it goes to the run
        that was Running at `at`, found when it is delivered."""
        with self.lock:
            if self.db is None or self.queue:
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
        process resolved it first)."""
        with self.lock:
            if self.db is None or self.queue:
                return False
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("DELETE FROM loose WHERE id=? AND state=0", (loose_id,)).rowcount != 1:
                    db.execute("ROLLBACK")
                    return False
                db.execute(f"INSERT OR IGNORE INTO runs({','.join(_RUN_COLUMNS)}) VALUES"
                           f"({','.join('?' * len(_RUN_COLUMNS))})", _run_values(known))
                db.execute(f"INSERT INTO records({','.join(_RECORD_COLUMNS)}) VALUES"
                           f"({','.join('?' * len(_RECORD_COLUMNS))})", _record_values(record))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return True

    def refuse_loose(self, loose_id: int, answer: str) -> None:
        self._submit(_Op([("UPDATE loose SET state=3, answer=? WHERE id=?", (answer, loose_id))]))

    # -- ownership ----------------------------------------------------------------------------------

    def claim(self, run_key: str, expected: Optional[str], owner: str) -> bool:
        """Take a run over from a gone owner; False when another process took it first (or the
        journal cannot be written now: then nobody can)."""
        with self.lock:
            if self.db is None or self.queue:
                return False
            try:
                changed = self.db.execute("UPDATE runs SET owner=? WHERE run_key=? AND owner IS ?",
                                          (owner, run_key, expected)).rowcount
            except Exception as exc:  # noqa: BLE001
                self._fault(exc)
                return False
            return changed == 1

    # -- reading ------------------------------------------------------------------------------------

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> List[sqlite3.Row]:
        with self.lock:
            if self.db is None:
                return []
            try:
                cursor = self.db.execute(sql, args)
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
            except Exception as exc:  # noqa: BLE001
                self._fault(exc)
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
