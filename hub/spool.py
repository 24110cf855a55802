"""The child's raw output, kept until it has become Log records the journal holds: plain
append-only segment files in the log folder (log/spool/<run key>/), one frame per pipe read,
so that keeping a chunk costs one write() and the reader threads never wait for a
transaction (the journal's SQLite file holds only the bookkeeping).

    frame = header (chunk number, stream, time read, length) + the bytes as read

When a write fails (a full disk, a read-only or unwritable folder) the chunk waits in memory
instead, in order, and later chunks join it there until the disk takes them again (tried
every second); the parser takes chunks from memory just as from disk, so output keeps being
delivered. Only when MEMORY_LIMIT bytes wait in memory does `append` block: the reader thread
then stops reading the pipe and the child waits, instead of output being lost.

A segment file is deleted once every chunk in it has become records the journal holds
(`release`); a run's folder goes when the run leaves the journal.
"""

from __future__ import annotations

import collections
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Deque, List, Optional

from hub import vocabulary as V

FRAME = struct.Struct("<QBdI")       # chunk number, stream code, time read, data length
SEGMENT_BYTES = 4 << 20               # a new segment file past this size (at most two hold parsed output)
MEMORY_LIMIT = 64 << 20               # bytes of output that may wait in memory when the disk refuses it
# This much output within FLOOD_WINDOW seconds (8 MB/s and more): the child prints faster than
# anyone could read it, and delivery steps aside (hub.delivery). Measured over a window, not per
# read: a reader that keeps up reads a block-buffered child's 8 KB blocks one at a time.
FLOOD_BYTES = 256 << 10
FLOOD_WINDOW = 0.03
RETRY_SECONDS = 1.0

# Test hooks, never set in production (tests/test_journal_faults.py): they let the paths of a
# full or failing disk run on any machine, without mounting a small file system.
#   HUB_TEST_STORAGE_FAULT=PATH  while the file PATH exists, every spool write, journal write
#                                and hub log line fails as the file's first word says: "full"
#                                (ENOSPC, also when the file is empty), "io" (EIO) or "locked"
#                                (the journal reports "database is locked"; spool and log unaffected)
#   HUB_TEST_MEMORY_LIMIT=BYTES  MEMORY_LIMIT for this process
_FAULT_FILE = os.environ.get("HUB_TEST_STORAGE_FAULT") or None
if os.environ.get("HUB_TEST_MEMORY_LIMIT"):
    MEMORY_LIMIT = int(os.environ["HUB_TEST_MEMORY_LIMIT"])


def injected_fault() -> Optional[str]:
    """The storage fault a test injects now ("full", "io", "locked"), or None (always None
    unless HUB_TEST_STORAGE_FAULT is set)."""
    if _FAULT_FILE is None:
        return None
    try:
        with open(_FAULT_FILE, encoding="utf-8") as handle:
            words = handle.read().split()
    except OSError:
        return None
    return words[0] if words else "full"


def injected_os_error() -> Optional[OSError]:
    """The OSError an injected fault makes a file write raise, or None."""
    import errno
    fault = injected_fault()
    if fault == "full":
        return OSError(errno.ENOSPC, "No space left on device (injected by HUB_TEST_STORAGE_FAULT)")
    if fault == "io":
        return OSError(errno.EIO, "Input/output error (injected by HUB_TEST_STORAGE_FAULT)")
    return None

STDOUT, STDERR, NOTE_INFO, NOTE_WARNING, NOTE_ERROR, END = 1, 2, 3, 4, 5, 6
STREAM_NAMES = {STDOUT: V.STDOUT, STDERR: V.STDERR}
NOTE_TYPES = {NOTE_INFO: V.INFO, NOTE_WARNING: V.WARNING, NOTE_ERROR: V.ERROR}
NOTE_CODES = {v: k for k, v in NOTE_TYPES.items()}
STREAM_CODES = {V.STDOUT: STDOUT, V.STDERR: STDERR}


@dataclass
class Chunk:
    number: int
    stream: int
    at: float
    length: int
    segment: Optional["_Segment"] = None
    offset: int = 0                   # where its data starts in the segment
    data: Optional[bytes] = None      # while it waits in memory


class _Segment:
    def __init__(self, path: str, first: int):
        self.path, self.first, self.last, self.size = path, first, first - 1, 0
        self.read_fd: Optional[int] = None

    def read(self, offset: int, length: int) -> bytes:
        if self.read_fd is None:
            self.read_fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self.read_fd, length, offset)
        if len(data) != length:
            raise OSError(f"{self.path}: a chunk is cut short")
        return data

    def close(self) -> None:
        if self.read_fd is not None:
            os.close(self.read_fd)
            self.read_fd = None


class Spool:
    """One run's raw output. The reader threads call `append`; the delivery engine `take`s."""

    def __init__(self, folder: str, on_condition: Callable[[str, str], None] = lambda what, where: None,
                 on_clear: Callable[[str, str], None] = lambda what, where: None, next_number: int = 0,
                 memory_limit: int = MEMORY_LIMIT, clock: Callable[[], float] = time.monotonic):
        self.folder = folder
        self.on_condition, self.on_clear = on_condition, on_clear
        self.memory_limit = memory_limit
        self.clock = clock
        self.lock = threading.Condition()
        self.chunks: Deque[Chunk] = collections.deque()    # not yet parsed, in order
        self.segments: Deque[_Segment] = collections.deque()
        self.next_number = next_number
        self.memory_bytes = 0
        self.condition: Optional[str] = None
        self._next_try = 0.0
        self._write_fd: Optional[int] = None
        self._abandon_wait = False
        self.held_back = 0.0              # seconds the reader waited for memory
        self._window_start, self._window_bytes = 0.0, 0   # output in the current FLOOD_WINDOW
        self.on_data: Callable[[bool], None] = lambda flooding: None   # called after each chunk

    # -- opening an existing spool (an adopted run) -------------------------------------------------

    @classmethod
    def recover(cls, folder: str, parsed_up_to: int, **kwargs) -> "Spool":
        """The spool a gone process left: every whole frame at or after `parsed_up_to`."""
        spool = cls(folder, **kwargs)
        highest = parsed_up_to - 1
        names = sorted(n for n in os.listdir(folder) if n.endswith(".seg")) if os.path.isdir(folder) else []
        for name in names:
            path = os.path.join(folder, name)
            segment = _Segment(path, int(name.split(".")[0]))
            with open(path, "rb") as handle:
                data = handle.read()
            offset = 0
            while offset + FRAME.size <= len(data):
                number, stream, at, length = FRAME.unpack_from(data, offset)
                if offset + FRAME.size + length > len(data):
                    break   # cut short by a crash mid-write: the rest of this file is not whole
                if number >= parsed_up_to:
                    spool.chunks.append(Chunk(number, stream, at, length, segment, offset + FRAME.size))
                segment.last = max(segment.last, number)
                highest = max(highest, number)
                offset += FRAME.size + length
            segment.size = offset
            spool.segments.append(segment)
        spool.next_number = highest + 1
        spool.release(parsed_up_to)
        return spool

    # -- the writer's side ---------------------------------------------------------------------------

    def append(self, stream: int, data: bytes, at: float) -> None:
        """Keep one chunk: on disk if it takes it, else in memory (blocking while memory is full)."""
        with self.lock:
            chunk = Chunk(self.next_number, stream, at, len(data))
            self.next_number += 1
            if self.memory_bytes == 0 and not (self.condition and self.clock() < self._next_try):
                if not self._write(chunk, data):
                    self._keep_in_memory(chunk, data)
            else:
                self._keep_in_memory(chunk, data)
                self._retry_disk()
            self.chunks.append(chunk)
            self._wait_for_memory()
            now = self.clock()
            if now - self._window_start >= FLOOD_WINDOW:
                self._window_start, self._window_bytes = now, 0
            self._window_bytes += len(data)
            flooding = self._window_bytes >= FLOOD_BYTES
        self.on_data(flooding)

    def note(self, message_type: str, text: str, at: Optional[float] = None) -> None:
        """A record of the hub's own (exit code, could not start...), after the output so far."""
        self.append(NOTE_CODES[message_type], text.encode("utf-8"), at or time.time())

    def end(self) -> None:
        """The end of the output: a last line without newline is complete now."""
        self.append(END, b"", time.time())
        with self.lock:
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None

    def stop_waiting(self) -> None:
        """The child is gone: a reader blocked on full memory keeps what it holds and returns."""
        with self.lock:
            self._abandon_wait = True
            self.lock.notify_all()

    def _wait_for_memory(self) -> None:
        if self.memory_bytes <= self.memory_limit or self._abandon_wait:
            return
        started = self.clock()
        while self.memory_bytes > self.memory_limit and not self._abandon_wait:
            self.lock.wait(RETRY_SECONDS)
            self._retry_disk()
        self.held_back += self.clock() - started

    def _keep_in_memory(self, chunk: Chunk, data: bytes) -> None:
        chunk.data = data
        self.memory_bytes += len(data)

    def _write(self, chunk: Chunk, data: bytes) -> bool:
        """One frame onto the current segment; False (and the condition noted) when the disk refuses."""
        try:
            segment = self._segment_for(chunk.number)
            header = FRAME.pack(chunk.number, chunk.stream, chunk.at, len(data))
            if _FAULT_FILE is not None:
                injected = injected_os_error()
                if injected is not None:
                    raise injected
            written = os.writev(self._write_fd, [header, data])
            if written != len(header) + len(data):
                os.ftruncate(self._write_fd, segment.size)   # never leave half a frame in the file
                raise OSError(28, "No space left on device")
        except OSError as exc:
            self._fail(exc)
            return False
        chunk.segment, chunk.offset = segment, segment.size + FRAME.size
        segment.size += written
        segment.last = chunk.number
        if self.condition is not None:
            self.on_clear(self.condition, self.folder)
            self.condition = None
        return True

    def _segment_for(self, number: int) -> _Segment:
        segment = self.segments[-1] if self.segments else None
        if segment is None or self._write_fd is None or segment.size >= SEGMENT_BYTES:
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
            # Both levels 0700: makedirs gives the folders it makes on the way the umask's mode.
            os.makedirs(os.path.dirname(self.folder), mode=0o700, exist_ok=True)
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            segment = _Segment(os.path.join(self.folder, f"{number:012d}.seg"), number)
            self._write_fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            segment.size = os.fstat(self._write_fd).st_size
            self.segments.append(segment)
        return segment

    def _fail(self, exc: OSError) -> None:
        from hub.journal import condition_of
        if self._write_fd is not None:
            try:
                os.close(self._write_fd)
            except OSError:
                pass
            self._write_fd = None
        what = condition_of(exc) or f"the disk cannot be written ({exc})"
        if self.condition is None:
            self.condition = what
            self.on_condition(what, self.folder)
        self._next_try = self.clock() + RETRY_SECONDS

    def _retry_disk(self) -> None:
        """Move chunks waiting in memory onto the disk, in order, once the retry time has come."""
        if not self.memory_bytes or self.clock() < self._next_try:
            return
        for chunk in self.chunks:
            if chunk.data is None:
                continue
            if not self._write(chunk, chunk.data):
                return
            self.memory_bytes -= chunk.length
            chunk.data = None
        self.lock.notify_all()

    def retry_now(self) -> None:
        """Try the disk again at once for what waits in memory (the run is ending: its Warning
        must not call a condition that has cleared "still")."""
        with self.lock:
            self._next_try = 0.0
            self._retry_disk()

    # -- the parser's side -----------------------------------------------------------------------------

    def has_unparsed(self, next_number: int) -> bool:
        with self.lock:
            return bool(self.chunks) and self.chunks[-1].number >= next_number

    def take(self, next_number: int, max_bytes: int) -> List[tuple]:
        """The next unparsed chunks, about `max_bytes` of them (at least one), as
        (number, stream code, time read, data). Chunks taken from memory leave it at once (their
        content now lives in the records made of them)."""
        taken = []
        with self.lock:
            while self.chunks and self.chunks[0].number < next_number:
                self._forget(self.chunks.popleft())
            total = 0
            for chunk in self.chunks:
                if taken and total + chunk.length > max_bytes:
                    break
                taken.append(chunk)
                total += chunk.length
            wanted = [(c, c.data) for c in taken]
        out = []
        for chunk, data in wanted:
            out.append((chunk.number, chunk.stream, chunk.at, data if data is not None else
                        chunk.segment.read(chunk.offset, chunk.length)))
        with self.lock:
            for chunk in taken:
                if self.chunks and self.chunks[0] is chunk:
                    self._forget(self.chunks.popleft())
            self.lock.notify_all()
        return out

    def _forget(self, chunk: Chunk) -> None:
        if chunk.data is not None:
            self.memory_bytes -= chunk.length
            chunk.data = None

    def release(self, parsed_up_to: int) -> None:
        """Every chunk before `parsed_up_to` is in records the journal holds: delete the segment
        files that hold nothing else."""
        with self.lock:
            while len(self.segments) > (1 if self._write_fd is not None else 0) \
                    and self.segments[0].last < parsed_up_to:
                segment = self.segments.popleft()
                segment.close()
                try:
                    os.unlink(segment.path)
                except OSError:
                    pass

    def remove(self) -> None:
        """The run left the journal: its folder goes."""
        with self.lock:
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
            for segment in self.segments:
                segment.close()
            self.segments.clear()
            self.chunks.clear()
            self.memory_bytes = 0
        import shutil   # only when a run's raw output is removed: a helper script starts without it
        shutil.rmtree(self.folder, ignore_errors=True)
