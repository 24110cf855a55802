"""What the scripts say to the person or to cron, on stderr; and the one line a helper gives
its caller on stdout (`print_out`).

On a terminal the wrapper tells the person what it does (a line per entry as it starts and
as it ends, progress through a replay); without one (cron) it says only warnings and errors,
which cron mails. `-q` keeps only errors; `-v` says everything, terminal or not.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional, TextIO

QUIET, NORMAL, VERBOSE = 0, 1, 2


def print_out(text: str) -> bool:
    """Write one line on stdout for the caller to read (a run key, a record's ID), flushed at
    once. False when it cannot be written (the reader closed the pipe, the disk is full); a
    stdout the caller closed takes nothing, and that is no failure."""
    if sys.stdout is None:
        return True
    try:
        print(text, flush=True)
        return True
    except (OSError, ValueError):
        return False


class Console:
    def __init__(self, level: int = NORMAL, stream: Optional[TextIO] = None):
        self.stream = stream or sys.stderr
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.level = level
        self._lock = threading.Lock()
        self._bar = False
        self._last_bar = 0.0

    @property
    def chatty(self) -> bool:
        """Whether progress lines are wanted: on a terminal, or with -v."""
        return self.level == VERBOSE or (self.level == NORMAL and self.tty)

    def info(self, text: str) -> None:
        if self.chatty:
            self._write(text)

    def warning(self, text: str) -> None:
        if self.level >= NORMAL:
            self._write(text if text.startswith("warning:") else f"warning: {text}")

    def error(self, text: str) -> None:
        self._write(text if text.startswith("error:") else f"error: {text}")

    def hand_over(self, text: str, what: str, anyway: str) -> bool:
        """Give the caller its one line on stdout (print_out). When stdout cannot take it, say on
        stderr that `what` was not written and what was done `anyway`; False then."""
        if print_out(text):
            return True
        self.error(f"{what} could not be written to stdout (its reader is gone); {anyway}")
        return False

    def line(self, text: str) -> None:
        """A line printed whatever the level (the one error line of a failed script)."""
        self._write(text)

    def say(self, text: str) -> None:
        """A line that already says its level ("error: …", "warning: …")."""
        if text.startswith("error:"):
            self.error(text)
        else:
            self.warning(text)

    def progress(self, done: int, total: int, what: str, force: bool = False) -> None:
        """A progress bar on a terminal (redrawn at most ten times a second); with -v and no
        terminal, a line now and then."""
        now = time.monotonic()
        if not self.chatty or (not force and now - self._last_bar < (0.1 if self.tty else 5.0)):
            return
        self._last_bar = now
        share = done / total if total else 1.0
        if self.tty:
            filled = int(share * 30)
            line = f"\r{what}: [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
            with self._lock:
                self._bar = True
                try:
                    self.stream.write(line)
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
        else:
            self._write(f"{what}: {done}/{total}")

    def end_progress(self) -> None:
        with self._lock:
            if self._bar:
                self._bar = False
                try:
                    self.stream.write("\n")
                except (OSError, ValueError):
                    pass

    def _write(self, text: str) -> None:
        with self._lock:
            try:
                if self._bar:
                    self.stream.write("\n")
                    self._bar = False
                self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):   # stderr closed: the exit code still tells
                pass
