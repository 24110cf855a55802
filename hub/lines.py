"""Turning the child's raw output into log lines: splitting chunks at newlines, making
bytes readable text, finding the level a line states, and cutting text to the Log
trackor's limits. Pure functions and one small stateful splitter; no I/O.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from hub import vocabulary

# A level word counts only inside the first 40 characters (SPEC §5 step 6).
LEVEL_WINDOW = 40

_LEVELS = {
    "INFO": vocabulary.INFO,
    "WARN": vocabulary.WARNING,
    "WARNING": vocabulary.WARNING,
    "ERROR": vocabulary.ERROR,
    "CRITICAL": vocabulary.ERROR,
    "FATAL": vocabulary.ERROR,
}
_WORDS = "INFO|WARNING|WARN|ERROR|CRITICAL|FATAL"
# Upper-case as a whole token; any case when bracketed ("[warn]") or followed by a colon ("error:").
_LEVEL_RE = re.compile(
    rf"(?<![A-Za-z0-9_])(?:"
    rf"(?P<upper>{_WORDS})(?![A-Za-z0-9_])"
    rf"|\[(?P<bracketed>(?i:{_WORDS}))\]"
    rf"|(?P<colon>(?i:{_WORDS})):"
    rf")"
)
# CSI and OSC escape sequences (colours, cursor moves, titles): noise in a log record.
_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# Control characters other than tab; NUL and friends would be refused or invisible downstream.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def detect_level(text: str) -> Optional[str]:
    """The message type a line states about itself, or None when it states none."""
    for match in _LEVEL_RE.finditer(text, 0, LEVEL_WINDOW + 12):
        word = match.group("upper") or match.group("bracketed") or match.group("colon")
        if match.end() - (1 if match.group("colon") else 0) <= LEVEL_WINDOW:
            return _LEVELS[word.upper()]
        return None
    return None


def message_type_for(stream: str, text: str) -> str:
    """stderr lines are Errors, stdout lines Info, unless the line states its own level."""
    stated = detect_level(text)
    if stated:
        return stated
    return vocabulary.ERROR if stream == vocabulary.STDERR else vocabulary.INFO


def readable(raw: bytes) -> str:
    """Decode one line of output: invalid UTF-8 replaced, escape sequences removed, a
    carriage-return progress bar reduced to what a terminal would show last."""
    text = raw.decode("utf-8", errors="replace")
    if text.endswith("\r"):
        text = text[:-1]
    if "\x1b" in text:
        text = _ANSI_RE.sub("", text)
    if "\r" in text:
        segments = [s for s in text.split("\r") if s]
        text = segments[-1] if segments else ""
    if _CONTROL_RE.search(text):
        text = _CONTROL_RE.sub("\ufffd", text)
    return text


def cut_message(text: str, limit: int = vocabulary.MESSAGE_LIMIT) -> str:
    """The first line of text, cut to the Message limit with an ellipsis."""
    first = text.split("\n", 1)[0]
    if len(first) <= limit:
        return first
    return first[: limit - 1] + vocabulary.ELLIPSIS


def split_long(text: str, limit: int = vocabulary.DESCRIPTION_LIMIT) -> List[str]:
    """A line longer than the Description limit as consecutive parts of at most `limit`."""
    if len(text) <= limit:
        return [text]
    return [text[i : i + limit] for i in range(0, len(text), limit)]


class LineSplitter:
    """Splits one stream's chunks into complete lines, carrying a partial last line
    over to the next chunk. `leftover` can be saved and restored, so a journal can
    resume splitting where an earlier process stopped."""

    def __init__(self, leftover: bytes = b""):
        self.leftover = leftover

    def feed(self, data: bytes) -> List[bytes]:
        if not data:
            return []
        pieces = data.split(b"\n")
        pieces[0] = self.leftover + pieces[0]
        self.leftover = pieces.pop()
        return pieces

    def finish(self) -> List[bytes]:
        """The last line, when the stream ended without a newline."""
        rest, self.leftover = self.leftover, b""
        return [rest] if rest else []


def describe_parts(parts: List[str]) -> List[Tuple[str, str]]:
    """(marker, text) for each part of a split line; the marker is empty for a whole line."""
    if len(parts) == 1:
        return [("", parts[0])]
    return [(f"(part {i}/{len(parts)}) ", part) for i, part in enumerate(parts, 1)]
