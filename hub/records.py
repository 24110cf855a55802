"""From the child's raw chunks to Log records: split lines, make them readable, type
them, spot printed files, number them, and merge them when they come in floods.

A record is a tuple (seq, stream, at, message type, text, marker, file path):
`seq` is the number of its first line (its Log ID's suffix), `text` one line or,
for a merged record, consecutive lines joined with newlines.

A flood is mostly plain lines: no level word, nothing that could be a path, no
control characters. Such a block is decoded, merged and cut into records with
string operations on the whole block, so that parsing 200,000 lines costs the
wrapper a fraction of what the child spent printing them, and the child keeps its
core. Every other line takes the careful path, one line at a time.
"""

from __future__ import annotations

import bisect
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from hub import lines as L
from hub import uploads
from hub import vocabulary as V

Record = Tuple[int, str, float, str, str, str, Optional[str]]

EOF_STREAM = "eof"
NOTE_PREFIX = "hub:"

# A line still without its newline past this size is sent in parts as it comes, marked
# "(part k/…)" until its end shows how many there are: memory stays bounded by this,
# however long the line.
LONG_LINE_HOLD = 8 * V.DESCRIPTION_LIMIT

# A block free of these can skip the per-line work. Checked with str and bytes methods,
# not a regular expression: a case-insensitive alternation over megabytes costs seconds.
_LEVEL_WORDS = ("info", "warn", "error", "critical", "fatal")
_LEVEL_WORDS_UPPER = tuple(word.upper().encode("ascii") for word in _LEVEL_WORDS)
_CONTROL_BYTES = bytes(range(0, 9)) + bytes(range(11, 32)) + b"\x7f"
# A line between two newlines with no space or tab in it (perhaps empty): a single word, which
# could name a file. One search (it jumps from newline to newline) instead of a test per line.
_SINGLE_WORD_LINE = re.compile(rb"\n[^ \t\n]*\n")


class _Plain:
    """Consecutive plain lines of one stream: a text block, its line count, its first seq, and
    when each of its chunks was read (`marks`: (first seq, time) pairs), so that a record cut
    from the middle still carries the time its own first line was read."""

    def __init__(self, seq: int, stream: str, at: float, mtype: str, text: str, count: int):
        self.seq, self.stream, self.at, self.mtype, self.count = seq, stream, at, mtype, count
        # Blocks joined once, when the text is first wanted: appending to one growing string
        # would copy it again for every chunk of a flood.
        self.parts = [text]
        self.marks = [(seq, at)]

    @property
    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts = ["\n".join(self.parts)]
        return self.parts[0]

    def read_at(self, seq: int) -> float:
        return self.marks[bisect.bisect_right(self.marks, (seq, float("inf"))) - 1][1]


class RecordMaker:
    """Turns a run's chunks into records; `leftover` and `next_seq` carry over between calls
    (and between processes, through the journal)."""

    def __init__(self, cwd: str, read_stdout: bool, policy: Optional[uploads.UploadPolicy], workers: int,
                 leftover: Dict[str, str], next_seq: int, message_limit: int = V.MESSAGE_LIMIT,
                 description_limit: int = V.DESCRIPTION_LIMIT,
                 on_refused: Optional[Callable[[uploads.Decision], None]] = None):
        # `policy` says which printed files may be uploaded (hub.uploads); None: none are.
        self.cwd, self.read_stdout, self.policy, self.workers = cwd, read_stdout, policy, workers
        self.on_refused = on_refused
        self.message_limit, self.limit = message_limit, description_limit
        self.hold = LONG_LINE_HOLD if description_limit == V.DESCRIPTION_LIMIT else 8 * description_limit
        self.splitters = {s: L.LineSplitter(leftover.get(s, "").encode("latin-1")) for s in (V.STDOUT, V.STDERR)}
        # A long line sent in parts so far: how many parts, and the type its first part gave it.
        self.long_parts = {s: int(leftover.get(s + ":parts", "0")) for s in self.splitters}
        self.long_type = {s: leftover.get(s + ":type", "") for s in self.splitters}
        self.seq = next_seq
        self.items: List[object] = []   # Record tuples and _Plain blocks, in output order
        self.lines = 0

    def leftover(self) -> Dict[str, str]:
        """What carries over to the next call: partial lines (bytes as latin-1) and long-line state."""
        state = {s: sp.leftover.decode("latin-1") for s, sp in self.splitters.items() if sp.leftover}
        for s, parts in self.long_parts.items():
            if parts:
                state[s + ":parts"], state[s + ":type"] = str(parts), self.long_type[s]
        return state

    def feed(self, stream: str, data: bytes, at: float) -> None:
        """One chunk, in the order the journal holds them."""
        if stream in self.splitters:
            splitter = self.splitters[stream]
            raws = splitter.feed(data)
            if raws and self.long_parts[stream]:
                self._end_long_line(stream, at, raws.pop(0))
            if raws:
                self._block(stream, raws, at)
            if len(splitter.leftover) > self.hold:
                self._send_long_line_parts(stream, at)
        elif stream == EOF_STREAM:
            for name, splitter in self.splitters.items():
                for raw in splitter.finish():
                    if self.long_parts[name]:
                        self._end_long_line(name, at, raw)
                    else:
                        self._line(name, at, raw)
        else:  # a note of the hub's own: one record of the stated type
            self._note(stream[len(NOTE_PREFIX):], at, data.decode("utf-8", "replace"))

    def records(self) -> List[Record]:
        """The records of everything fed so far: merged when more lines wait than the workers
        can send at once (the child outpaces delivery), one per line otherwise."""
        if self.lines <= self.workers:
            return [r for item in self.items for r in (_one_per_line(item) if isinstance(item, _Plain) else [item])]
        merged: List[Record] = []
        current: Optional[List] = None   # [seq, stream, at, mtype, parts, size]
        for item in self.items:
            if isinstance(item, _Plain):
                current = _add_plain(merged, current, item, self.limit)
            elif _mergeable(item):
                current = _add_plain(merged, current, _Plain(item[0], item[1], item[2], item[3], item[4], 1), self.limit)
            else:
                _close(merged, current)
                current = None
                merged.append(item)
        _close(merged, current)
        return merged

    # -- the two paths ----------------------------------------------------------------

    def _block(self, stream: str, raws: List[bytes], at: float) -> None:
        if stream == V.STDOUT and not self.read_stdout and not any(_could_be_path(r) for r in raws):
            return  # stdout not wanted, and none of these lines can name a file
        raw = b"\n".join(raws)
        text = _plain_text(raw, raws, stream, self.limit)
        if text is None:
            for one in raws:
                self._line(stream, at, one)
            return
        count = len(raws)
        mtype = V.ERROR if stream == V.STDERR else V.INFO
        previous = self.items[-1] if self.items else None
        if isinstance(previous, _Plain) and previous.stream == stream:
            previous.parts.append(text)
            previous.count += count
            previous.marks.append((self.seq, at))
        else:
            self.items.append(_Plain(self.seq, stream, at, mtype, text, count))
        self.seq += count
        self.lines += count

    def _line(self, stream: str, at: float, raw: bytes) -> None:
        text = L.readable(raw)
        path = None
        if stream == V.STDOUT and self.policy is not None:
            decision = uploads.printed_file(text, self.cwd, self.policy)
            if decision.upload:
                path = decision.path
            elif decision.kind == uploads.TOO_LARGE:
                self._note(V.WARNING, at, f"{text}: {uploads.over_limit_message(decision.size, self.policy.max_bytes)}")
                return
            elif decision.refused and self.on_refused is not None:
                self.on_refused(decision)
        if stream == V.STDOUT and not self.read_stdout and not path:
            return
        self._add(stream, at, L.message_type_for(stream, text), text, path)

    def _send_long_line_parts(self, stream: str, at: float) -> None:
        """Records for the full parts of a line whose end has not come yet."""
        splitter = self.splitters[stream]
        rest = splitter.leftover
        while len(rest) > self.hold:
            cut = _char_boundary(rest, self.limit)
            text = L.readable(rest[:cut])
            rest = rest[cut:]
            if not self.long_parts[stream]:
                self.long_type[stream] = L.message_type_for(stream, text)
            self.long_parts[stream] += 1
            if stream == V.STDERR or self.read_stdout:
                self._append(stream, at, self.long_type[stream], text, f"(part {self.long_parts[stream]}/\u2026) ")
        splitter.leftover = rest

    def _end_long_line(self, stream: str, at: float, raw: bytes) -> None:
        """The end of a line sent in parts: its last parts, numbered out of the total now known."""
        done, mtype = self.long_parts[stream], self.long_type[stream]
        self.long_parts[stream], self.long_type[stream] = 0, ""
        if stream == V.STDOUT and not self.read_stdout:
            return
        parts = L.split_long(L.readable(raw), self.limit)
        for number, part in enumerate(parts, done + 1):
            self._append(stream, at, mtype, part, f"(part {number}/{done + len(parts)}) ")

    def _append(self, stream: str, at: float, mtype: str, text: str, marker: str,
                path: Optional[str] = None) -> None:
        self.items.append((self.seq, stream, at, mtype, text, marker, path))
        self.seq += 1
        self.lines += 1

    def _note(self, mtype: str, at: float, text: str) -> None:
        self._add("hub", at, mtype, text, None)

    def _add(self, stream: str, at: float, mtype: str, text: str, path: Optional[str]) -> None:
        for marker, part in L.describe_parts(L.split_long(text, self.limit)):
            self._append(stream, at, mtype, part, marker, path)


def _plain_text(raw: bytes, raws: List[bytes], stream: str, limit: int) -> Optional[str]:
    """The block as text when every line in it is plain (valid UTF-8, no control characters,
    no level word, not too long, and on stdout nothing that could name a file); else None."""
    if len(raw.translate(None, _CONTROL_BYTES)) != len(raw) or max(map(len, raws)) > limit:
        return None
    if stream == V.STDOUT and (b"/" in raw or b"." in raw or _single_word(raws[0]) or _single_word(raws[-1])
                               or _SINGLE_WORD_LINE.search(raw) is not None):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _may_state_a_level(raw, text) else text


def _may_state_a_level(raw: bytes, text: str) -> bool:
    """Whether a line of the block might state its level (hub.lines.detect_level): in any case
    only before a colon or in brackets; without either, only as an upper-case word, which a
    block without capitals cannot hold (one pass, instead of five searches of its lower case)."""
    if b":" not in raw and b"[" not in raw:
        return not raw.islower() and any(word in raw for word in _LEVEL_WORDS_UPPER)
    lowered = text.lower()
    return any(word in lowered for word in _LEVEL_WORDS)


def _single_word(raw: bytes) -> bool:
    return b" " not in raw and b"\t" not in raw


def _could_be_path(raw: bytes) -> bool:
    """uploads.could_be_path on raw bytes: "/" or ".", or a single word."""
    return b"/" in raw or b"." in raw or (bool(raw.strip()) and _single_word(raw))


def _char_boundary(data: bytes, limit: int) -> int:
    """The largest cut at or before `limit` that does not split a UTF-8 character."""
    cut = limit
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut or limit


def _mergeable(record: Sequence) -> bool:
    """A single line that may share a record: of the child's streams, not a part, no file."""
    return record[1] in (V.STDOUT, V.STDERR) and not record[5] and not record[6]


def _one_per_line(block: _Plain) -> List[Record]:
    return [(block.seq + i, block.stream, block.read_at(block.seq + i), block.mtype, text, "", None)
            for i, text in enumerate(block.text.split("\n"))]


def _add_plain(merged: List[Record], current: Optional[List], block: _Plain, limit: int) -> List:
    """Append a block of lines to the record being built, cutting records at the Description
    limit on line boundaries; returns the record being built afterwards."""
    if current is not None and (current[1] != block.stream or current[3] != block.mtype):
        _close(merged, current)
        current = None
    # `start` walks through the block's text: cutting the rest off as a new string each time
    # would copy most of a 2 MB block again for every record cut from it.
    text, seq, start, end = block.text, block.seq, 0, len(block.text)
    while start < end:
        if current is None:
            current = [seq, block.stream, block.read_at(seq), block.mtype, [], 0]
        room = limit - current[5] - (1 if current[4] else 0)
        if end - start <= room:
            current[4].append(text[start:] if start else text)
            current[5] += end - start + (1 if len(current[4]) > 1 else 0)
            break
        cut = text.rfind("\n", start, start + room + 1)
        if cut < 0 and current[4]:   # not even the next line fits: this record is full
            _close(merged, current)
            current = None
            continue
        if cut < 0:   # an empty record and a line of the whole limit: it is the record
            cut = text.find("\n", start)
            cut = end if cut < 0 else cut
        current[4].append(text[start:cut])
        seq += text.count("\n", start, cut) + 1
        start = cut + 1
        _close(merged, current)
        current = None
    return current


def _close(merged: List[Record], current: Optional[List]) -> None:
    if current is not None and current[4]:
        merged.append((current[0], current[1], current[2], current[3], "\n".join(current[4]), "", None))
