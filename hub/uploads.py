"""The hub's one boundary for reading files it uploads (SPEC §3 `UploadDirs`, §5 step 7, §6 `-f`).

A stdout line that names a file hands that file to OneVizion, where everyone who sees the run can
download it. So a file is uploaded only when the child plainly meant to hand it over: its real path
(symbolic links resolved) lies under one of the entry's UploadDirs, and it is none of the files
that are never uploaded (the Passwords.json the hub was given, anything in the hub's log folder,
anything under /proc, /sys, /dev or /run, anything that is not a regular file, a file the hub
cannot read, a file over the size limit). Files are read in chunks, never whole.

How the caller uses it
----------------------
1. Per run, once: ``policy = UploadPolicy.build(entry.upload_dirs, working_dir, [passwords_path],
   log_dir, max_bytes)``. A delivery in another process (a replay) rebuilds it from
   ``policy.as_dict()`` kept with the run: ``UploadPolicy.from_dict(saved, extra_secret_files=[...])``.
2. Per stdout line, when the line is parsed: ``decision = printed_file(text, working_dir, policy)``.
   ``decision.upload``: the line's record gets ``decision.path``. ``decision.kind == TOO_LARGE``:
   a Warning record (``over_limit_message``). Any other ``decision.refused``: an ordinary line, and
   ``decision.log_message()`` (path only) in the hub's log, once per path. ``NOT_A_PATH``: nothing.
3. Per upload attempt, at delivery: ``opened = open_for_upload(path, policy)``; a Decision back is
   a refusal (log it; TOO_LARGE is the Warning record again). Otherwise
   ``body = MultipartBody(opened)`` and ``POST .../file/{field}?file_name=body.file_name`` with
   ``data=body, headers={"Content-Type": body.content_type, "Content-Length": str(body.length)}``.
   Keep the request inside ``with opened:`` (a request that fails before reading the body still
   closes the file). A body streams once: a retry opens the file again. ``UploadReadError`` out of the request means
   the file shrank (or a read failed) mid-stream: the request is abandoned, retry later.
   IntegrationWrapperAddingLog.py's ``-f`` uses ``open_for_upload(path, policy, check_dirs=False)``.

Why the file is checked twice: the line is parsed long before delivery (an outage, a replay the
next day), and the file can be replaced meanwhile by a FIFO, a device, a symbolic link to a secret
or a larger file. So delivery opens it without following it anywhere dangerous (O_PATH, then the
opened inode is judged and reopened for reading through /proc/self/fd; O_NONBLOCK | O_NOCTTY
always), and reads at most the size it saw on the opened file.

What this does not stop: a child running as the hub's user can read Passwords.json itself and print
it. The rules guard against handing over by accident (``ls``, ``find``, a stray path), not against
a hostile child.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, Iterator, Optional, Sequence, Tuple, Union
from urllib.parse import quote

CHUNK_BYTES = 64 * 1024
PATH_MAX = 4096               # longer text is not a path on Linux
SYSTEM_DIRS = ("/proc", "/sys", "/dev", "/run")

# Decision.kind: the first two are not refusals; every other kind is.
NOT_A_PATH = "not a path"     # not a path, or no such file: an ordinary line, nothing to log
UPLOAD = "upload"             # an existing regular file that may be uploaded
OUTSIDE = "outside UploadDirs"
SECRET = "secret file"        # a Passwords.json (or other file) the hub was given
LOG_DIR = "log folder"
SYSTEM = "system folder"      # /proc, /sys, /dev, /run, by path or by file system
DIRECTORY = "directory"
SPECIAL = "not a regular file"
UNREADABLE = "unreadable"
TOO_LARGE = "too large"       # Decision.size holds the size: the caller writes a Warning record
CHANGED = "changed"           # gone, or its real path does not lead to it (deleted, moved)

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
_O_PATH = getattr(os, "O_PATH", 0)


def _proc_fd_works() -> bool:
    return os.path.isdir("/proc/self/fd")


@dataclass(frozen=True)
class Decision:
    """What to do with a named file. ``path`` is absolute as named (links not resolved; None for
    NOT_A_PATH), ``real_path`` the same with links resolved, ``size`` its bytes (UPLOAD, TOO_LARGE),
    ``reason`` a short text for the hub's log (paths and sizes only, never content)."""

    kind: str
    path: Optional[str] = None
    real_path: Optional[str] = None
    size: Optional[int] = None
    reason: str = ""

    @property
    def upload(self) -> bool:
        return self.kind == UPLOAD

    @property
    def refused(self) -> bool:
        return self.kind not in (NOT_A_PATH, UPLOAD)

    def log_message(self) -> str:
        """One line for the hub's log: ``PATH: not uploaded: REASON``."""
        return "%s: not uploaded: %s" % (self.path, self.reason)


_NOT_A_PATH = Decision(NOT_A_PATH)


class UploadReadError(Exception):
    """The opened file could not be read as it was when opened (it shrank, or a read failed).
    Deliberately not an OSError: raised from inside a streamed request body, it reaches the
    caller as itself instead of looking like a dropped connection."""

    def __init__(self, path: str, message: str):
        super().__init__("%s: %s" % (path, message))
        self.path = path


def over_limit_message(size: int, max_bytes: int) -> str:
    """The Warning record's text for a file over the limit (after the line itself)."""
    return "file of %.1f MB not uploaded: over the upload limit of %.0f MB (--max-upload-mb)" % (
        size / 1e6, max_bytes / 1e6)


# ---------------------------------------------------------------- the policy

@dataclass(frozen=True)
class UploadPolicy:
    """Where uploads may come from. Every path is absolute with links resolved.

    allowed_dirs   a printed file must lie under one of these ("/" allows any folder; empty: none)
    secret_files   never uploaded (the Passwords.json files the hub was given)
    log_dirs       never uploaded from (the hub's log folder, as given and resolved)
    max_bytes      the size limit
    secret_ids     (st_dev, st_ino) of the secret files when built: catches a hard link
    pseudo_devices (st_dev, folder) of /proc, /sys, /dev, /run when they are file systems of their
                   own: catches a bind mount of one of their files elsewhere
    """

    allowed_dirs: Tuple[str, ...]
    secret_files: Tuple[str, ...]
    log_dirs: Tuple[str, ...]
    max_bytes: int
    secret_ids: FrozenSet[Tuple[int, int]] = field(default=frozenset(), compare=False, repr=False)
    pseudo_devices: Tuple[Tuple[int, str], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(cls, upload_dirs: Optional[Sequence[str]], working_dir: Optional[str],
              secret_files: Iterable[str], log_dir: str, max_bytes: int) -> "UploadPolicy":
        """The policy of one run.

        upload_dirs   the entry's UploadDirs (relative ones against working_dir); None: the
                      default, the working directory and the temp folder ($TMPDIR, else /tmp).
                      A default folder that resolves to "/" is left out: only an explicit ["/"]
                      allows any folder (a wrapper started from "/" must not mean "everything").
        working_dir   the child's working directory (relative: against the current one)
        secret_files  the Passwords.json files the hub was given (a caller may add others,
                      e.g. Integration.json, whose Environment may hold secrets)
        log_dir       the hub's log folder
        """
        cwd = os.path.abspath(working_dir or os.getcwd())
        if upload_dirs is None:
            folders = [d for d in (cwd, os.path.abspath(os.environ.get("TMPDIR") or "/tmp"))
                       if os.path.realpath(d) != "/"]
        else:
            folders = [os.path.join(cwd, d) for d in upload_dirs]
        log = os.path.abspath(log_dir)
        return cls._make(_unique(os.path.realpath(d) for d in folders),
                         _unique(os.path.realpath(os.path.abspath(p)) for p in secret_files),
                         _unique([log, os.path.realpath(log)]), int(max_bytes))

    @classmethod
    def _make(cls, allowed: Tuple[str, ...], secrets: Tuple[str, ...], log_dirs: Tuple[str, ...],
              max_bytes: int) -> "UploadPolicy":
        ids = set()
        for path in secrets:
            try:
                st = os.stat(path)
            except OSError:
                continue   # not there now: its path is still refused
            ids.add((st.st_dev, st.st_ino))
        return cls(allowed, secrets, log_dirs, max_bytes, frozenset(ids), _pseudo_devices())

    def as_dict(self) -> Dict[str, Any]:
        """JSON-ready, for keeping with the run (a replay delivers in another process)."""
        return {"allowed_dirs": list(self.allowed_dirs), "secret_files": list(self.secret_files),
                "log_dirs": list(self.log_dirs), "max_bytes": self.max_bytes}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], extra_secret_files: Iterable[str] = ()) -> "UploadPolicy":
        """The policy back from ``as_dict()``, plus the secret files of this invocation."""
        extra = [os.path.realpath(os.path.abspath(p)) for p in extra_secret_files]
        return cls._make(tuple(data["allowed_dirs"]), _unique(list(data["secret_files"]) + extra),
                         tuple(data["log_dirs"]), int(data["max_bytes"]))


def _unique(paths: Iterable[str]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(paths))


def _pseudo_devices() -> Tuple[Tuple[int, str], ...]:
    """The device numbers of the system folders that are mounts of their own. A folder on the
    root file system (/run in many containers) is left out: its device is everyone's."""
    try:
        root = os.stat("/").st_dev
    except OSError:
        return ()
    found = []
    for folder in SYSTEM_DIRS:
        try:
            device = os.stat(folder).st_dev
        except OSError:
            continue
        if device != root and os.path.ismount(folder):
            found.append((device, folder))
    return tuple(found)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder if folder.endswith("/") else folder + "/")


# ---------------------------------------------------------------- a printed line

def could_be_path(text: str) -> bool:
    """Whether a line might name a file, without a system call: it holds "/" or ".", or it is one
    word (a file in the working directory, such as `report` or `Makefile`). A line of several
    words with neither is taken for prose: a file name with spaces and no extension is not
    recognised (the price of no stat for every line of a flood)."""
    return "/" in text or "." in text or not any(c in text for c in " \t")


def printed_file(text: str, working_dir: Optional[str], policy: UploadPolicy) -> Decision:
    """What to do with one stdout line (already made readable): NOT_A_PATH for the vast majority,
    UPLOAD for a file that may be uploaded, or a refusal with its reason.

    Text that cannot be a path (see could_be_path; longer than PATH_MAX, holding U+FFFD or NUL)
    costs no system call. A missing path is NOT_A_PATH. Relative paths are against working_dir.
    """
    candidate = text.strip()
    if (not candidate or len(candidate) > PATH_MAX or not could_be_path(candidate)
            or "\ufffd" in candidate or "\0" in candidate):
        return _NOT_A_PATH
    path = _absolute(candidate, working_dir)
    try:
        st = os.stat(path)
    except PermissionError:
        # A folder on the way cannot be searched: the file may exist, and the hub cannot read it.
        return Decision(UNREADABLE, path, reason="the hub cannot read it (permission denied)")
    except (OSError, ValueError):
        return _NOT_A_PATH
    real = os.path.realpath(path)
    refusal = _judge(path, real, st, policy, check_dirs=True) or _leads_back(path, real, st)
    if refusal is not None:
        return refusal
    if not os.access(real, os.R_OK):
        return Decision(UNREADABLE, path, real, reason="the hub cannot read it (permission denied)")
    if st.st_size > policy.max_bytes:
        return _too_large(path, real, st.st_size, policy)
    return Decision(UPLOAD, path, real, st.st_size)


def _absolute(candidate: str, working_dir: Optional[str]) -> str:
    """Absolute, "//" at the start collapsed, ".." left for the kernel's resolution (after links)."""
    if not candidate.startswith("/"):
        candidate = os.path.join(os.path.abspath(working_dir or os.getcwd()), candidate)
    return "/" + candidate.lstrip("/")


def _judge(path: str, real: str, st: os.stat_result, policy: UploadPolicy,
           check_dirs: bool) -> Optional[Decision]:
    """The refusal for a file named `path`, resolved to `real`, whose stat is `st`; None if none.
    The never list first, then the type, then UploadDirs. (Readability and size are the callers':
    a refused file's size is nobody's business, so the size comes last.)"""
    lexical = os.path.normpath(path)

    def refuse(kind: str, reason: str, size: Optional[int] = None) -> Decision:
        return Decision(kind, path, real, size, reason)

    for folder in SYSTEM_DIRS:
        if _under(lexical, folder) or _under(real, folder):
            return refuse(SYSTEM, "it is under %s" % folder)
    for device, folder in policy.pseudo_devices:
        if st.st_dev == device:
            return refuse(SYSTEM, "it is on the file system of %s" % folder)
    for secret in policy.secret_files:
        if real == secret:
            return refuse(SECRET, "it is the %s the hub was given" % os.path.basename(secret))
    if (st.st_dev, st.st_ino) in policy.secret_ids:
        return refuse(SECRET, "it is a link to a file the hub was given (Passwords.json)")
    for folder in policy.log_dirs:
        if _under(lexical, folder) or _under(real, folder):
            return refuse(LOG_DIR, "it is in the hub's log folder %s" % folder)
    if stat.S_ISDIR(st.st_mode):
        return refuse(DIRECTORY, "it is a directory")
    if not stat.S_ISREG(st.st_mode):
        return refuse(SPECIAL, "it is not a regular file (%s)" % _type_name(st.st_mode))
    if check_dirs and not any(_under(real, folder) for folder in policy.allowed_dirs):
        where = ", ".join(policy.allowed_dirs) or "none"
        shown = "" if real == path else " (its real path is %s)" % real
        return refuse(OUTSIDE, "it is outside UploadDirs%s; allowed: %s" % (shown, where))
    return None


def _too_large(path: str, real: str, size: int, policy: UploadPolicy) -> Decision:
    return Decision(TOO_LARGE, path, real, size, "it is %.1f MB, over the upload limit of %.0f MB"
                    % (size / 1e6, policy.max_bytes / 1e6))


def _type_name(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "mode %o" % stat.S_IFMT(mode)


# ---------------------------------------------------------------- at delivery

class Opened:
    """A file opened for upload: ``name`` (the base name to upload it as), ``size`` (the bytes it
    had when opened, at most the limit: exactly that many are read, never more), ``chunks()``."""

    def __init__(self, fd: int, path: str, real_path: str, size: int):
        self.fd: Optional[int] = fd
        self.path, self.real_path, self.size = path, real_path, size
        self.name = os.path.basename(path)

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The file's first ``size`` bytes in chunks; closes the file at the end (or when the
        iterator is dropped). Raises UploadReadError when the file ends early or a read fails."""
        if self.fd is None:
            raise UploadReadError(self.path, "already read or closed")
        left = self.size
        try:
            while left > 0:
                try:
                    data = os.read(self.fd, min(chunk_bytes, left))
                except OSError as exc:
                    raise UploadReadError(self.path, "read failed: %s" % (exc.strerror or exc)) from None
                if not data:
                    raise UploadReadError(self.path, "shrank from %d to %d bytes while it was uploaded"
                                          % (self.size, self.size - left))
                left -= len(data)
                yield data
        finally:
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def __del__(self) -> None:
        # A safety net only: callers close (chunks() does at its end, or `with opened:`).
        try:
            self.close()
        except OSError:
            pass

    def __enter__(self) -> "Opened":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_for_upload(path: str, policy: UploadPolicy, check_dirs: bool = True) -> Union[Opened, Decision]:
    """Open `path` (absolute) for upload, or a refusal (a Decision with ``refused`` true).

    Never blocks and never opens a FIFO or a device for reading: the path is opened with O_PATH,
    the opened inode is judged (regular file, its real path as the kernel names it, the never
    list, UploadDirs unless check_dirs is false, the size), and only then reopened for reading
    through /proc/self/fd. Where O_PATH or /proc is missing, a plain open with O_NONBLOCK |
    O_NOCTTY is judged the same way. check_dirs=False is for a file a person named (``-f``):
    UploadDirs does not apply, the never list does.
    """
    if _O_PATH and _proc_fd_works():
        return _open_by_path_fd(path, policy, check_dirs)
    return _open_plain(path, policy, check_dirs)


def _open_by_path_fd(path: str, policy: UploadPolicy, check_dirs: bool) -> Union[Opened, Decision]:
    try:
        handle = os.open(path, _O_PATH | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return _open_error(path, exc)
    try:
        st = os.fstat(handle)
        real, unsure = _opened_real_path(path, handle, st)
        # The rules first (a link into /proc is refused as such), then whether the real path
        # can be trusted at all.
        refusal = _judge(path, real, st, policy, check_dirs) or unsure
        if refusal is not None:
            return refusal
        try:
            fd = os.open("/proc/self/fd/%d" % handle, _OPEN_FLAGS)
        except OSError as exc:
            return _open_error(path, exc)
    finally:
        os.close(handle)
    return _checked(fd, path, real, st, policy)


def _open_plain(path: str, policy: UploadPolicy, check_dirs: bool) -> Union[Opened, Decision]:
    # Without O_PATH the file must be opened to be judged: judge its name first, so that only a
    # swap in the moment between the two opens anything but a regular file (and then O_NONBLOCK
    # keeps a FIFO from blocking, the judging below refuses it).
    try:
        st = os.stat(path)
    except OSError as exc:
        return _open_error(path, exc)
    refusal = _judge(path, os.path.realpath(path), st, policy, check_dirs)
    if refusal is not None:
        return refusal
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        return _open_error(path, exc)
    try:
        st = os.fstat(fd)
        real, unsure = _opened_real_path(path, fd, st)
        # The rules first (a link into /proc is refused as such), then whether the real path
        # can be trusted at all.
        refusal = _judge(path, real, st, policy, check_dirs) or unsure
    except BaseException:
        os.close(fd)
        raise
    if refusal is not None:
        os.close(fd)
        return refusal
    return _checked(fd, path, real, st, policy)


def _checked(fd: int, path: str, real: str, before: os.stat_result, policy: UploadPolicy) -> Union[Opened, Decision]:
    """The readable descriptor: the same inode as judged, its size (now) within the limit."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        return _open_error(path, exc)
    if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return Decision(CHANGED, path, real, reason="it changed while it was opened")
    if st.st_size > policy.max_bytes:
        os.close(fd)
        return _too_large(path, real, st.st_size, policy)
    return Opened(fd, path, real, st.st_size)


def _opened_real_path(path: str, fd: int, st: os.stat_result) -> Tuple[str, Optional[Decision]]:
    """The opened file's real path as the kernel names it, and a refusal when that name does not
    lead back to the same file (deleted, renamed, reached through a /proc link to a deleted
    file): then its real path cannot be judged."""
    try:
        real = os.readlink("/proc/self/fd/%d" % fd) if _proc_fd_works() else os.path.realpath(path)
    except OSError:
        real = os.path.realpath(path)
    return real, _leads_back(path, real, st)


def _leads_back(path: str, real: str, st: os.stat_result) -> Optional[Decision]:
    """A refusal when the real path is not the file `st` describes: the file was deleted or
    moved, or was reached through a /proc link to a deleted file (its real path is then a name
    such as "/tmp/x (deleted)", which must not be judged as if it were that folder's file)."""
    try:
        again = os.stat(real)
    except (OSError, ValueError):
        again = None
    if again is None or (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
        return Decision(CHANGED, path, real, reason="its real path %s does not lead to it (deleted or moved)" % real)
    return None


def _open_error(path: str, exc: OSError) -> Decision:
    if isinstance(exc, PermissionError):
        return Decision(UNREADABLE, path, reason="the hub cannot read it (permission denied)")
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return Decision(CHANGED, path, reason="it no longer exists")
    return Decision(UNREADABLE, path, reason="the hub cannot open it (%s)" % (exc.strerror or exc))


# ---------------------------------------------------------------- the request body

class MultipartBody:
    """A multipart/form-data body with one part (``file``) streamed from an Opened file, for
    ``POST /api/v3/trackor/{id}/file/{field}?file_name=NAME``.

    ``content_type`` and ``length`` (exact: send it as Content-Length) are known up front; iterating
    yields the part's head, the file in 64 KiB chunks and the closing boundary, so memory does not
    grow with the file. It streams once (a retry opens the file again); a file that ends early
    raises UploadReadError instead of sending a wrong length.

    The file name: ``file_name`` is the base name with undecodable bytes replaced; in the part's
    header, ``filename="..."`` holds it with every character that is not printable ASCII, and
    ``"``, ``\\`` and ``%``, replaced by "_", and when that differs, ``filename*=UTF-8''...``
    (RFC 5987 percent-encoding) gives the exact name, for servers that read it.
    """

    def __init__(self, opened: Opened, file_name: Optional[str] = None, boundary: Optional[str] = None):
        self.opened = opened
        name = file_name if file_name is not None else opened.name
        self.file_name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace") or "file"
        self.boundary = boundary or "hub-boundary-" + os.urandom(16).hex()
        self.content_type = "multipart/form-data; boundary=" + self.boundary
        self._head = ("--%s\r\nContent-Disposition: form-data; name=\"file\"; %s\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n"
                      % (self.boundary, _filename_params(self.file_name))).encode("ascii")
        self._tail = ("\r\n--%s--\r\n" % self.boundary).encode("ascii")
        self.length = len(self._head) + opened.size + len(self._tail)
        self._started = False

    def __len__(self) -> int:
        # requests reads it for Content-Length when the caller does not set the header.
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("a multipart body streams once: open the file again to retry")
        self._started = True
        return self._stream()

    def _stream(self) -> Iterator[bytes]:
        yield self._head
        yield from self.opened.chunks()
        yield self._tail


def _filename_params(name: str) -> str:
    plain = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    if plain == name:
        return 'filename="%s"' % plain
    return "filename=\"%s\"; filename*=UTF-8''%s" % (plain, quote(name, safe=""))
