"""The local journal: everything the hub owes OneVizion, on disk until OneVizion
confirms it. It is what makes "nothing is lost" true.

One SQLite file in the log folder (WAL mode: a crash mid-write never corrupts it,
and several wrappers and helper scripts can write at once). Three tables:

    runs    one row per run the hub must create, update or close; who owns it
            (pid, host, process start time), the pending run create, Last Run
            update and final status
    chunks  the child's raw output as read from its pipes, a row per read, so the
            reader does no per-line work; the sender turns them into lines
    lines   the future Log records, one row each: a line, or consecutive lines
            merged when they came faster than OneVizion took them. A row is fixed
            before it is first sent, so a resend after a crash has the same key
            (from `seq`, the number of its first line) and the same content

Delivered lines and finished runs are pruned, so the file stays small. Lines that
OneVizion refused (4xx) stay, for `--replay`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

# Chunk streams besides stdout/stderr: the end of the child's output, and the hub's own notes.
from hub.records import EOF_STREAM, NOTE_PREFIX

PENDING, CREATED, DELIVERED, REJECTED = 0, 1, 2, 3


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(
  run_key TEXT PRIMARY KEY,
  integration_key TEXT NOT NULL,
  integration_id INTEGER,
  cwd TEXT,
  read_stdout INTEGER NOT NULL DEFAULT 1,
  create_fields TEXT,
  trackor_id INTEGER,
  created INTEGER NOT NULL DEFAULT 0,
  last_run_fields TEXT,
  owner_pid INTEGER, owner_host TEXT, owner_start TEXT,
  started_at REAL NOT NULL,
  last_activity REAL NOT NULL,
  next_seq INTEGER NOT NULL DEFAULT 1,
  leftover TEXT NOT NULL DEFAULT '{}',
  output_closed INTEGER NOT NULL DEFAULT 0,
  final_fields TEXT,
  final_done INTEGER NOT NULL DEFAULT 0,
  supervised INTEGER NOT NULL DEFAULT 0,
  schema TEXT
);
CREATE TABLE IF NOT EXISTS chunks(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_key TEXT NOT NULL, stream TEXT NOT NULL, at REAL NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_run ON chunks(run_key, id);
CREATE TABLE IF NOT EXISTS lines(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_key TEXT NOT NULL, seq INTEGER, stream TEXT NOT NULL, at REAL NOT NULL,
  mtype TEXT NOT NULL, text TEXT NOT NULL, marker TEXT NOT NULL DEFAULT '',
  file_path TEXT, log_key TEXT, description TEXT, trackor_id INTEGER,
  state INTEGER NOT NULL DEFAULT 0, error TEXT);
CREATE INDEX IF NOT EXISTS lines_by_run ON lines(run_key, state, id);
"""


def process_start(pid: int) -> Optional[str]:
    """The kernel's start time of a process (clock ticks since boot), so that a reused
    pid is not mistaken for the process that owned a run."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return None


def process_alive(pid: Optional[int], start: Optional[str]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    current = process_start(pid)
    return start is None or current is None or current == start


class Journal:
    """The journal file, shared by the threads of one process through one connection."""

    def __init__(self, path: str, busy_timeout: float = 30.0, schema_json: Optional[str] = None):
        self.path = path
        # The schema mapping of this invocation, kept with each run it opens, so that a
        # later replay (perhaps with another -s) builds that run's records the same way.
        self.schema_json = schema_json
        self.lock = threading.RLock()
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.start = process_start(self.pid)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = self._open(busy_timeout)

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        try:
            return self._connect(busy_timeout)
        except sqlite3.DatabaseError:
            # A damaged file (a disk filled up, a copy cut short): keep it for inspection
            # and start a fresh journal rather than refuse to run.
            damaged = f"{self.path}.damaged-{int(time.time())}"
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, damaged + suffix)
            self.damaged = damaged
            return self._connect(busy_timeout)

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False,
                             isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        # A file cut short (a full disk, a bad copy) can open fine and fail later, mid-run:
        # check it now, while setting it aside is still harmless. The journal is small.
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            db.close()
            raise sqlite3.DatabaseError("journal failed its integrity check")
        return db

    damaged: Optional[str] = None

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (IMMEDIATE) so that writers from other
        processes queue on the busy timeout instead of failing halfway."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _tx(self, statements: Iterable[Tuple[str, Sequence[Any]]]) -> None:
        with self._transaction() as db:
            for sql, args in statements:
                db.execute(sql, args)

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Optional[sqlite3.Row]:
        with self.lock:
            return self.db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> List[sqlite3.Row]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def _run(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self.lock:
            return self.db.execute(sql, args).rowcount

    # -- runs -----------------------------------------------------------------------

    def open_run(self, run_key: str, integration_key: str, integration_id: Optional[int], cwd: str,
                 read_stdout: bool, create_fields: Dict[str, Any], last_run_fields: Dict[str, Any],
                 supervised: bool = True) -> None:
        """Record a new run this process owns and must create in OneVizion.
        `supervised`: a wrapper runs its child (a crash then closes the run); False for runs
        that the RunController opened, which whoever opened them closes."""
        now = time.time()
        self._run(
            "INSERT INTO runs(run_key, integration_key, integration_id, cwd, read_stdout, create_fields,"
            " last_run_fields, owner_pid, owner_host, owner_start, started_at,"
            " last_activity, supervised, output_closed, schema) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_key, integration_key, integration_id, cwd, int(read_stdout), _dump(create_fields),
             _dump(last_run_fields), self.pid, self.host, self.start, now, now, int(supervised),
             int(not supervised), self.schema_json))

    def forget_run(self, run_key: str) -> None:
        """Drop a run OneVizion refused to create, before anything was written for it."""
        self._tx([("DELETE FROM lines WHERE run_key=?", (run_key,)),
                  ("DELETE FROM chunks WHERE run_key=?", (run_key,)),
                  ("DELETE FROM runs WHERE run_key=?", (run_key,))])

    def _known_run(self, run_key: str, integration_key: str) -> Tuple[str, Sequence[Any]]:
        """The statement that gives a run known only by key (opened by the RunController or
        another wrapper) a row, to hold records and a final status. It runs in the same
        transaction as what it is for: another process's prune() may drop an empty row
        between two separate statements."""
        now = time.time()
        return ("INSERT OR IGNORE INTO runs(run_key, integration_key, created, output_closed, owner_pid,"
                " owner_host, owner_start, started_at, last_activity, schema) VALUES(?,?,1,1,?,?,?,?,?,?)",
                (run_key, integration_key, self.pid, self.host, self.start, now, now, self.schema_json))

    def close_known_run(self, run_key: str, integration_key: str, final_fields: Dict[str, Any]) -> None:
        """A final status for a run known only by key (RunController stop while OneVizion is away)."""
        self._tx([self._known_run(run_key, integration_key),
                  ("UPDATE runs SET final_fields=?, output_closed=1 WHERE run_key=?", (_dump(final_fields), run_key))])

    def run(self, run_key: str) -> Optional[sqlite3.Row]:
        return self._one("SELECT * FROM runs WHERE run_key=?", (run_key,))

    def mark_created(self, run_key: str, trackor_id: int) -> None:
        self._run("UPDATE runs SET created=1, trackor_id=? WHERE run_key=?", (trackor_id, run_key))

    def set_trackor_id(self, run_key: str, trackor_id: int) -> None:
        self._run("UPDATE runs SET trackor_id=? WHERE run_key=?", (trackor_id, run_key))

    def last_run_sent(self, run_key: str) -> None:
        self._run("UPDATE runs SET last_run_fields=NULL WHERE run_key=?", (run_key,))

    def finish_run(self, run_key: str, final_fields: Dict[str, Any]) -> None:
        """The run is over; its final status waits until every record before it is sent."""
        self._run("UPDATE runs SET final_fields=?, output_closed=1 WHERE run_key=?",
                  (_dump(final_fields), run_key))

    def final_sent(self, run_key: str) -> None:
        self._run("UPDATE runs SET final_done=1 WHERE run_key=?", (run_key,))

    def orphans(self) -> List[sqlite3.Row]:
        """Runs on this host whose owner process is gone and that still owe OneVizion something."""
        rows = self._all(
            "SELECT * FROM runs WHERE owner_host=? AND (created=0 OR last_run_fields IS NOT NULL"
            " OR (final_done=0 AND (supervised=1 OR final_fields IS NOT NULL))"
            " OR EXISTS (SELECT 1 FROM lines WHERE lines.run_key=runs.run_key AND state<?)"
            " OR EXISTS (SELECT 1 FROM chunks WHERE chunks.run_key=runs.run_key))",
            (self.host, DELIVERED))
        return [r for r in rows if not (r["owner_pid"] == self.pid or process_alive(r["owner_pid"], r["owner_start"]))]

    def adopt(self, row: sqlite3.Row) -> bool:
        """Take over an orphaned run; False when another process took it first."""
        return self._run(
            "UPDATE runs SET owner_pid=?, owner_start=? WHERE run_key=? AND owner_pid IS ? AND owner_start IS ?",
            (self.pid, self.start, row["run_key"], row["owner_pid"], row["owner_start"])) == 1

    def release(self, run_key: str) -> None:
        """Give up a run without finishing it (the next invocation adopts it)."""
        self._run("UPDATE runs SET owner_pid=NULL WHERE run_key=? AND owner_pid=?", (run_key, self.pid))

    def prune(self, run_key: str) -> None:
        """Drop what OneVizion has confirmed; the run's row goes once nothing is owed."""
        self._tx([
            ("DELETE FROM lines WHERE run_key=? AND state=?", (run_key, DELIVERED)),
            ("DELETE FROM runs WHERE run_key=? AND (final_done=1 OR (supervised=0 AND final_fields IS NULL))"
             " AND created=1 AND last_run_fields IS NULL AND NOT EXISTS"
             " (SELECT 1 FROM lines WHERE run_key=?) AND NOT EXISTS (SELECT 1 FROM chunks WHERE run_key=?)",
             (run_key, run_key, run_key)),
        ])

    def retry_rejected(self) -> int:
        """--replay: give records OneVizion refused before another chance."""
        return self._run("UPDATE lines SET state=?, error=NULL WHERE state=?", (PENDING, REJECTED))

    def owed(self) -> Dict[str, int]:
        """What the journal still owes OneVizion: records and final statuses."""
        records = self._one("SELECT count(*) FROM lines WHERE state<?", (DELIVERED,))[0]
        rejected = self._one("SELECT count(*) FROM lines WHERE state=?", (REJECTED,))[0]
        chunks = self._one("SELECT count(*) FROM chunks WHERE stream IN ('stdout','stderr')")[0]
        finals = self._one("SELECT count(*) FROM runs WHERE final_done=0 AND final_fields IS NOT NULL")[0]
        return {"records": records + (1 if chunks else 0), "rejected": rejected, "statuses": finals}

    # -- output ---------------------------------------------------------------------

    def add_chunks(self, run_key: str, chunks: Sequence[Tuple[str, bytes, float]]) -> None:
        """Raw pipe reads (stream, data, time read), in one transaction."""
        if not chunks:
            return
        with self._transaction() as db:
            db.executemany("INSERT INTO chunks(run_key, stream, at, data) VALUES(?,?,?,?)",
                           [(run_key, s, at, data) for s, data, at in chunks])
            db.execute("UPDATE runs SET last_activity=? WHERE run_key=?", (chunks[-1][2], run_key))

    def add_note(self, run_key: str, message_type: str, text: str, at: Optional[float] = None) -> None:
        """A record of the hub's own (could not start, exit code, wrapper stopped...), after the output so far."""
        self.add_chunks(run_key, [(NOTE_PREFIX + message_type, text.encode("utf-8"), at or time.time())])

    def end_output(self, run_key: str) -> None:
        """Mark the end of the child's output: a last line without newline is complete now."""
        self.add_chunks(run_key, [(EOF_STREAM, b"", time.time())])

    def take_chunks(self, run_key: str, max_bytes: int) -> List[sqlite3.Row]:
        """The oldest unparsed chunks of a run, about max_bytes of them (at least one).
        Sizes are read first, so that only the chunks taken are loaded into memory."""
        sizes = self._all("SELECT id, length(data) FROM chunks WHERE run_key=? ORDER BY id LIMIT 512", (run_key,))
        ids, total = [], 0
        for chunk_id, size in sizes:
            if ids and total + size > max_bytes:
                break
            ids.append(chunk_id)
            total += size
        if not ids:
            return []
        return self._all(f"SELECT id, stream, at, data FROM chunks WHERE id IN ({','.join('?' * len(ids))})"
                         " ORDER BY id", ids)

    def store_parsed(self, run_key: str, chunk_ids: Sequence[int], lines: Sequence[Tuple], leftover: Dict[str, str],
                     next_seq: int) -> None:
        """Lines parsed from chunks replace those chunks, with the splitter state, atomically."""
        with self._transaction() as db:
            db.executemany("INSERT INTO lines(run_key, seq, stream, at, mtype, text, marker, file_path)"
                           " VALUES(?,?,?,?,?,?,?,?)", [(run_key,) + tuple(line) for line in lines])
            db.executemany("DELETE FROM chunks WHERE id=?", [(i,) for i in chunk_ids])
            db.execute("UPDATE runs SET leftover=?, next_seq=? WHERE run_key=?",
                       (json.dumps(leftover), next_seq, run_key))

    def has_chunks(self, run_key: str) -> bool:
        return self._one("SELECT 1 FROM chunks WHERE run_key=? LIMIT 1", (run_key,)) is not None

    # -- records --------------------------------------------------------------------

    def add_record(self, run_key: str, integration_key: str, log_key: str, message_type: str, text: str,
                   description: Optional[str], file_path: Optional[str], at: float) -> int:
        """A whole record with its own key (IntegrationWrapperAddingLog.py); returns its id."""
        with self._transaction() as db:
            db.execute(*self._known_run(run_key, integration_key))
            return db.execute(
                "INSERT INTO lines(run_key, stream, at, mtype, text, file_path, log_key, description)"
                " VALUES(?,?,?,?,?,?,?,?)",
                (run_key, "record", at, message_type, text, file_path, log_key, description)).lastrowid

    def open_run_of(self, integration_key: str) -> Optional[str]:
        """The newest run of an integration that a live wrapper on this machine supervises."""
        for row in self._all("SELECT * FROM runs WHERE integration_key=? AND supervised=1 AND final_fields IS NULL"
                             " AND owner_host=? ORDER BY started_at DESC", (integration_key, self.host)):
            if process_alive(row["owner_pid"], row["owner_start"]):
                return row["run_key"]
        return None

    def unsent_records(self, run_key: str, exclude: Iterable[int], limit: int = 16) -> List[int]:
        """Records not yet delivered, oldest first, leaving out those in flight."""
        skip = set(exclude)
        rows = self._all("SELECT id FROM lines WHERE run_key=? AND state IN (?,?) ORDER BY id LIMIT ?",
                         (run_key, PENDING, CREATED, limit + len(skip)))
        return [r[0] for r in rows if r[0] not in skip][:limit]

    def forget_record(self, record_id: int) -> None:
        self._run("DELETE FROM lines WHERE id=?", (record_id,))

    def record(self, record_id: int) -> sqlite3.Row:
        return self._one("SELECT * FROM lines WHERE id=?", (record_id,))

    def set_record_state(self, record_id: int, state: int, trackor_id: Optional[int] = None,
                         error: Optional[str] = None) -> None:
        self._run("UPDATE lines SET state=?, trackor_id=coalesce(?, trackor_id), error=? WHERE id=?",
                  (state, trackor_id, error, record_id))

    def open_count(self, run_key: str) -> int:
        """Lines of the run not yet delivered or refused."""
        return self._one("SELECT count(*) FROM lines WHERE run_key=? AND state IN (?,?)",
                         (run_key, PENDING, CREATED))[0]


def _dump(value: Optional[Dict[str, Any]]) -> Optional[str]:
    return None if value is None else json.dumps(value)


def load(value: Optional[str]) -> Optional[Dict[str, Any]]:
    return None if value is None else json.loads(value)
