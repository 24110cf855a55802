"""The hub's own log: what the three scripts did and what went wrong, in the log
folder, one file per day (`hub-YYYY-MM-DD.log`), the last 30 days kept.

A file per day rather than a renaming rotation, because several wrappers and helper
scripts write at once and a rename by one would pull the file from under another.
Nothing logged here may carry a password, a token or a child's arguments; callers
log the program and the argument count.
"""

from __future__ import annotations

import glob
import logging
import os
import time

from hub.spool import injected_os_error

KEEP_DAYS = 30


class DailyFileHandler(logging.FileHandler):
    """Appends to the file of the current day, switching at midnight (local time)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.day = time.strftime("%Y-%m-%d")
        super().__init__(self._path(), encoding="utf-8", delay=True)

    def _path(self) -> str:
        return os.path.join(self.folder, f"hub-{self.day}.log")

    # Set by setup(): on_fault(what, where) when the log cannot be written (what: the condition,
    # as hub.journal names it), on_clear(what, where) when it can again.
    on_fault = None
    on_clear = None
    failing = None            # the condition while lines cannot be written
    _failed = False           # the line being written failed

    def _open(self):
        # The log holds run keys and what failed: private to the hub's user, like the journal.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding)

    def handleError(self, record: logging.LogRecord) -> None:
        """A log line that cannot be written (a full disk) is not worth a traceback on stderr,
        which cron would mail once per line: it is a storage condition like the journal's, said
        once (through on_fault), and the hub goes on."""
        self._failed = True
        if self.failing is None:
            import sys
            from hub.journal import condition_of
            exc = sys.exc_info()[1]
            self.failing = (condition_of(exc) if exc is not None else None) or "the hub's log cannot be written"
            if self.on_fault is not None:
                self.on_fault(self.failing, self.baseFilename)

    def emit(self, record: logging.LogRecord) -> None:
        day = time.strftime("%Y-%m-%d", time.localtime(record.created))
        if day != self.day:
            self.acquire()
            try:
                self.close()
                self.day = day
                self.baseFilename = os.path.abspath(self._path())
            finally:
                self.release()
        self._failed = False
        injected = injected_os_error()
        if injected is not None:   # a test's injected full disk (hub.spool's test hook)
            try:
                raise injected
            except OSError:
                self.handleError(record)
            return
        try:
            super().emit(record)
        except OSError:
            # The file itself could not be opened (FileHandler opens it outside its own guard).
            self.handleError(record)
        if not self._failed and self.failing is not None:
            what, self.failing = self.failing, None
            if self.on_clear is not None:
                self.on_clear(what, self.baseFilename)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            self.handleError(None)

    def close(self) -> None:
        # Closing flushes what a full disk refused: that must not become a traceback at exit.
        try:
            super().close()
        except OSError:
            self.stream = None


def setup(folder: str, script: str, on_fault=None, on_clear=None) -> logging.Logger:
    """The logger for one invocation of a script, writing to the day's file in `folder`
    (which the caller has checked: hub.context.prepare_log_dir)."""
    _drop_old(folder)
    logger = logging.getLogger(f"hub.{script}.{os.getpid()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    handler = DailyFileHandler(folder)
    handler.on_fault, handler.on_clear = on_fault, on_clear
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s {script}[%(process)d] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    return logger


def close(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def _drop_old(folder: str) -> None:
    cutoff = time.time() - KEEP_DAYS * 86400
    for path in glob.glob(os.path.join(folder, "hub-*.log")):
        try:
            if os.path.getmtime(path) < cutoff:
                os.remove(path)
        except OSError:
            pass
