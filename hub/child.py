"""The only module of the hub that starts processes.

`build_argv` turns an Integration.json `ExecutablePath` into an argv list.  `Child` runs
one integration script in its own session (so its whole process group can be signalled
without hitting the wrapper), stdin from /dev/null, stdout and stderr on two pipes that
two reader threads drain in big raw chunks (lines and decoding are the consumer's job).
`Child.wait` enforces the Timeout (TERM, grace, KILL) and returns a `ChildOutcome`;
`describe_outcome` turns that into the sentence of the run's Error log record.

Messages never contain the child's arguments (they may hold secrets): only the
program and the working directory are named.
"""

from __future__ import annotations

import errno
import os
import re
import fcntl
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence

from hub.errors import UsageError
from hub.vocabulary import DEFAULT_GRACE_SECONDS, STDERR, STDOUT

PIPE_SIZE = 1 << 20  # bytes of pipe buffer asked for each of the child's output pipes
SMALL_READ = 4 << 10       # a read smaller than this (a child that flushes line by line)...
SMALL_READ_PAUSE = 0.002   # ...is followed by this pause (seconds) before the next one

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = r"\$\{[^}]*\}?|\$[A-Za-z_][A-Za-z0-9_]*"
# One piece of a word, as sh sees it outside quotes; anything that matches none of
# these is an unclosed quote or a trailing backslash.
_PIECE = re.compile(r"""(?P<space>\s+) | '(?P<single>[^']*)' | "(?P<double>(?:[^"\\]|\\.)*)"
    | \\(?P<escaped>.) | (?P<reference>%s) | (?P<plain>[^\s'"\\$]+|\$)""" % _REFERENCE,
                    re.X | re.S)
# Inside double quotes a backslash escapes only $ ` " \ and newline, as in sh.
_IN_DOUBLE = re.compile(r"""\\([$`"\\\n])|(%s)""" % _REFERENCE)


def build_argv(executable_path: str, shell: bool, cwd: str,
               environ: Mapping[str, str]) -> List[str]:
    """Split `executable_path` into an argv list, the way a POSIX shell would.

    Without a shell: quotes and backslashes work as in sh; `$VAR` and `${VAR}` are
    expanded from `environ` outside single quotes, and an expanded value always stays
    inside its word (never split, never globbed), so a value with spaces is one
    argument.  A relative program containing a `/` is made absolute against `cwd`; a
    bare name is left for the PATH lookup.  With `shell`: `/bin/sh -c executable_path`
    (sh expands variables itself, from the child's environment).
    Raises UsageError naming `ExecutablePath` (never the arguments' values)."""
    if not executable_path or not executable_path.strip():
        raise UsageError("ExecutablePath is empty")
    if shell:
        return ["/bin/sh", "-c", executable_path]
    argv = _split(executable_path, environ)
    if not argv or not argv[0]:
        raise UsageError("ExecutablePath has no program")
    if "/" in argv[0] and not os.path.isabs(argv[0]):
        argv[0] = os.path.abspath(os.path.join(cwd or os.getcwd(), argv[0]))
    return argv


def _split(text: str, environ: Mapping[str, str]) -> List[str]:
    """sh-like word splitting with variable expansion; see build_argv."""
    words: List[str] = []
    word: Optional[str] = None  # None: between words; "" is a real (empty) word
    pos = 0
    while pos < len(text):
        piece = _PIECE.match(text, pos)
        if piece is None:
            raise UsageError("ExecutablePath has unbalanced quotes or a trailing backslash")
        pos, kind, value = piece.end(), piece.lastgroup, piece.group(piece.lastgroup)
        if kind == "space":
            if word is not None:
                words.append(word)
            word = None
            continue
        if kind == "double":
            value = _IN_DOUBLE.sub(lambda m: _expand(m.group(2), environ) if m.group(2)
                                   else m.group(1).strip("\n"), value)
        elif kind == "escaped" and value == "\n":
            continue  # backslash-newline continues the line, as in sh
        elif kind == "reference":
            value = _expand(value, environ)
        word = (word or "") + value
    if word is not None:
        words.append(word)
    return words


def _expand(reference: str, environ: Mapping[str, str]) -> str:
    """The value of `$NAME` or `${NAME}`; its name, never a value, in errors."""
    braced = reference.startswith("${")
    name = reference[2:-1] if braced else reference[1:]
    if braced and not (reference.endswith("}") and _NAME.fullmatch(name)):
        raise UsageError("ExecutablePath has a bad variable reference (write ${NAME})")
    if name not in environ:
        raise UsageError("ExecutablePath: ${%s} is not set in the environment" % name)
    return environ[name]


class ChildStartError(Exception):
    """The child could not be started; `.message` says why (program and directory only)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class ChildOutcome:
    """How a child ended. `ended_at` is when the child itself exited."""

    exit_code: Optional[int]        # None when ended by a signal
    signal: Optional[int]           # the signal that ended it
    timed_out: bool                 # the Timeout passed and the hub stopped it
    stopped_by: Optional[int]       # signal the wrapper received and forwarded
    killed_after_grace: bool        # SIGKILL was needed after the grace period
    pipes_left_open: bool           # a grandchild kept the pipes open; they were closed
    started_at: float
    ended_at: float
    grace: float = DEFAULT_GRACE_SECONDS  # seconds between TERM and KILL, for the message


OnOutput = Callable[[str, bytes, float], None]


class Child:
    """One child process: start(), then wait(); stop() may come from any thread or a
    signal handler.  `on_output(stream, chunk, at)` is called from the reader threads
    only, never after wait() has returned."""

    def __init__(self, argv: Sequence[str], cwd: str, env: Mapping[str, str],
                 on_output: OnOutput, timeout: Optional[float] = None,
                 grace: float = DEFAULT_GRACE_SECONDS, pipe_grace: float = 2.0,
                 read_size: int = 1 << 20):
        self._argv, self._cwd, self._env = list(argv), cwd, dict(env)
        self._on_output, self._read_size = on_output, read_size
        self._timeout, self._grace, self._pipe_grace = timeout, grace, pipe_grace
        self._proc: Optional[subprocess.Popen] = None
        self._readers: List[threading.Thread] = []
        self._wake_r = self._wake_w = -1
        # An RLock: stop() may run in a signal handler on the thread already inside stop().
        self._lock = threading.RLock()
        self._timeout_timer: Optional[threading.Timer] = None
        self._kill_timer: Optional[threading.Timer] = None
        self._kill_deadline: Optional[float] = None
        self._stopped_by: Optional[int] = None
        self._timed_out = self._killed_after_grace = False
        self._exited = self._finished = False
        self._started_at = 0.0
        self._outcome: Optional[ChildOutcome] = None
        self.callback_error: Optional[BaseException] = None  # first error of on_output

    def start(self) -> None:
        """Start the child in its own session; raise ChildStartError if it cannot run."""
        if self._proc is not None:
            raise RuntimeError("child already started")
        program = self._argv[0] if self._argv else ""
        if not os.path.isdir(self._cwd):
            why = "is not a directory" if os.path.exists(self._cwd) else "does not exist"
            raise ChildStartError("working directory %s: %s" % (why, self._cwd))
        self._started_at = time.time()
        try:
            self._proc = subprocess.Popen(
                self._argv, cwd=self._cwd, env=self._env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                close_fds=True, start_new_session=True)
        except OSError as err:
            raise ChildStartError(_start_failure(program, self._cwd, err)) from err
        for pipe in (self._proc.stdout, self._proc.stderr):
            _enlarge(pipe.fileno())
        # A self-pipe lets wait() wake readers blocked in poll() when a grandchild holds the pipes.
        self._wake_r, self._wake_w = os.pipe()
        for stream, pipe in ((STDOUT, self._proc.stdout), (STDERR, self._proc.stderr)):
            reader = threading.Thread(target=self._read, args=(stream, pipe.fileno()),
                                      name="child-%s" % stream, daemon=True)
            reader.start()
            self._readers.append(reader)
        if self._timeout is not None:
            self._timeout_timer = _daemon_timer(self._timeout, self._on_timeout)

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group and session id."""
        if self._proc is None:
            raise RuntimeError("child not started")
        return self._proc.pid

    def stop(self, signum: int) -> None:
        """Forward `signum` to the child's whole group; SIGKILL the group after the grace.

        Safe from a signal handler and from any thread; does nothing once wait() has
        returned (the group id may no longer be ours)."""
        if self._proc is None or self._finished:
            return
        if self._stopped_by is None:
            self._stopped_by = signum
        self._signal_group(signum)

    def wait(self, on_exit: Optional[Callable[[], None]] = None) -> ChildOutcome:
        """Wait for the child to exit and its output to be read; return how it ended.

        After the child exits, readers get `pipe_grace` seconds (longer while a stop is
        in its grace period) to see end-of-file; if a process the child started still
        holds the pipes, they are closed and `pipes_left_open` is set. `on_exit` is called
        as soon as the child itself has exited (to release a reader the consumer holds back)."""
        if self._proc is None:
            raise RuntimeError("child not started")
        if self._outcome is not None:
            return self._outcome
        returncode = self._proc.wait()  # signals interrupt it, run their handlers, and it resumes
        ended_at = time.time()
        self._exited = True
        if on_exit is not None:
            on_exit()
        if self._timeout_timer is not None:
            self._timeout_timer.cancel()
        pipes_left_open = self._finish_readers(time.monotonic())
        self._finished = True
        if self._kill_timer is not None and not _group_exists(self._proc.pid):
            self._kill_timer.cancel()  # nothing left to kill; never signal a reused group id
        sig = -returncode if returncode < 0 else None
        self._outcome = ChildOutcome(
            exit_code=None if sig else returncode, signal=sig, timed_out=self._timed_out,
            stopped_by=self._stopped_by,
            killed_after_grace=self._killed_after_grace and sig == signal.SIGKILL,
            pipes_left_open=pipes_left_open, started_at=self._started_at,
            ended_at=ended_at, grace=self._grace)
        return self._outcome

    def _read(self, stream: str, fd: int) -> None:
        """Reader thread: hand every chunk to on_output as it comes, until EOF or woken."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            if any(ready == self._wake_r for ready, _ in poller.poll()):
                return
            try:
                data = os.read(fd, self._read_size)
            except OSError:
                return
            if not data:
                return
            at = time.time()
            try:
                self._on_output(stream, data, at)
            except Exception as err:  # keep draining: a stuck pipe would block the child
                if self.callback_error is None:
                    self.callback_error = err
            if len(data) < SMALL_READ:
                # A child that flushes every line would otherwise cost a wake-up, a time stamp and a
                # chunk per line; a moment's pause lets a few lines gather (the 1 MiB pipe holds them).
                # Not after a whole block (4-8 KB, a block-buffered child): its writes into a pipe
                # that holds a backlog cost it more than into one that is read at once (measured).
                time.sleep(SMALL_READ_PAUSE)

    def _finish_readers(self, exited: float) -> bool:
        """Join the readers within the pipe grace; wake and close them past it."""
        left_open = False
        for reader in self._readers:
            while reader.is_alive():
                # Recomputed each time: a stop() arriving now extends the deadline.
                deadline = exited + self._pipe_grace
                if self._kill_deadline is not None:
                    deadline = max(deadline, self._kill_deadline + self._pipe_grace)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                reader.join(remaining)
        if any(reader.is_alive() for reader in self._readers):
            left_open = True
            os.write(self._wake_w, b"x")
            for reader in self._readers:
                reader.join()
        for pipe in (self._proc.stdout, self._proc.stderr):
            pipe.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        return left_open

    def _on_timeout(self) -> None:
        if self._exited or self._finished:
            return
        self._timed_out = True
        self._signal_group(signal.SIGTERM)

    def _signal_group(self, signum: int) -> None:
        pgid = self._proc.pid
        if pgid == os.getpgrp():  # cannot happen with start_new_session; never signal ourselves
            return
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass
        with self._lock:
            if self._kill_timer is None:
                self._kill_deadline = time.monotonic() + self._grace
                self._kill_timer = _daemon_timer(self._grace, self._kill_group)

    def _kill_group(self) -> None:
        if not self._exited:
            self._killed_after_grace = True
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _daemon_timer(seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.daemon = True  # a pending timer must never keep the wrapper alive
    timer.start()
    return timer


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_failure(program: str, cwd: str, err: OSError) -> str:
    """Why Popen failed, naming the program or the directory, never the arguments."""
    if err.filename == cwd and not os.path.isdir(cwd):
        return "working directory does not exist: %s" % cwd
    path = program if "/" in program else None
    if err.errno == errno.ENOENT:
        if path and os.path.isfile(path):
            return "cannot run %s: its #! interpreter was not found" % program
        return "no such program: %s" % program
    if err.errno in (errno.EACCES, errno.EISDIR, errno.EPERM):
        if path and os.path.isdir(path):
            return "is a directory: %s" % program
        return "not executable: %s" % program
    if err.errno == errno.ENOEXEC:
        return "not an executable format (a script needs a #! line): %s" % program
    return "cannot start %s: %s" % (program, err.strerror or err)


def describe_outcome(outcome: ChildOutcome, timeout: Optional[float]) -> Optional[str]:
    """The sentence for the run's Error log record, or None when the child exited 0
    and nothing unusual happened."""
    if outcome.signal is not None:
        verb = "killed" if outcome.signal == signal.SIGKILL else "terminated"
        text = "%s by %s" % (verb, _signal_name(outcome.signal))
    else:
        text = "exit code %s" % outcome.exit_code
    if outcome.timed_out:
        text += (" after a Timeout of %g s" % timeout) if timeout is not None else \
            " after its Timeout"
    elif outcome.killed_after_grace:
        text += " after the %g s grace period" % outcome.grace
    if outcome.stopped_by is not None:
        text = "the wrapper received %s; %s" % (_signal_name(outcome.stopped_by), text)
    if outcome.pipes_left_open:
        text += ("; a process the child started kept its output open after the child"
                 " exited, so the hub closed the pipes (its later output is lost)")
    unusual = outcome.timed_out or outcome.stopped_by is not None or outcome.pipes_left_open
    if outcome.exit_code == 0 and not unusual:
        return None
    return text


def _enlarge(fd: int) -> None:
    """Give a pipe 1 MiB instead of 64 KiB (Linux), so that a reader thread briefly kept
    from running (the GIL, a busy core) does not stop a child that prints fast."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:
        pass  # a limit below 1 MiB (/proc/sys/fs/pipe-max-size): the default size works too


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum
