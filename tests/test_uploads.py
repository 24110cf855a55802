"""hub.uploads: which printed files may be uploaded, opening them safely at delivery, and the
streamed multipart body. Real files throughout (tmp_path, FIFOs, sockets, symbolic and hard
links, /proc, /dev, /etc/shadow), and the body over real HTTP against the sandbox."""

from __future__ import annotations

import contextlib
import ctypes
import email.parser
import email.utils
import json
import os
import signal
import socket
import stat
import tempfile
import tracemalloc

import pytest
import requests

import sandbox as sandbox_pkg
from hub import uploads as U
from hub.uploads import (CHANGED, DIRECTORY, LOG_DIR, NOT_A_PATH, OUTSIDE, SECRET, SPECIAL, SYSTEM, TOO_LARGE,
                         UNREADABLE, UPLOAD, Decision, MultipartBody, Opened, UploadPolicy, UploadReadError,
                         open_for_upload, printed_file)
from sandbox import multipart

MB = 1000 * 1000
AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging: a blocking open() is interrupted by SIGALRM."""
    def expired(signum, frame):
        raise AssertionError("blocked for more than %s s" % seconds)
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """A working directory holding Passwords.json and log/ (as the README's cron lines have it),
    the temp folder beside it, and the default policy for it."""
    work = tmp_path / "work"
    (work / "log").mkdir(parents=True)
    (work / "Passwords.json").write_text('{"installation": {"Password": "s3cret"}}')
    (work / "log" / "journal.sqlite3").write_bytes(b"SQLite format 3\0other runs")
    (tmp_path / "temp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "temp"))
    return work


def policy_for(work, upload_dirs=None, max_bytes=100 * MB):
    return UploadPolicy.build(upload_dirs, str(work), [str(work / "Passwords.json")], str(work / "log"), max_bytes)


def opened_or_refusal(result):
    if isinstance(result, Opened):
        with result:
            return UPLOAD
    return result.kind


# ---------------------------------------------------------------- the policy

def test_default_is_the_working_directory_and_the_temp_folder(hub_dir, tmp_path, monkeypatch):
    assert policy_for(hub_dir).allowed_dirs == (str(hub_dir), str(tmp_path / "temp"))
    monkeypatch.delenv("TMPDIR")
    assert policy_for(hub_dir).allowed_dirs == (str(hub_dir), os.path.realpath("/tmp"))


def test_entries_are_real_paths_relative_to_the_working_directory(hub_dir, tmp_path):
    (hub_dir / "out").mkdir()
    os.symlink(str(hub_dir / "out"), str(tmp_path / "link-to-out"))
    policy = policy_for(hub_dir, ["out", str(tmp_path / "link-to-out"), "/var/../srv"])
    assert policy.allowed_dirs == (str(hub_dir / "out"), os.path.realpath("/srv"))
    assert policy.secret_files == (str(hub_dir / "Passwords.json"),)
    assert policy.log_dirs == (str(hub_dir / "log"),)


def test_a_working_directory_of_root_does_not_make_the_default_allow_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert UploadPolicy.build(None, "/", [], str(tmp_path / "log"), MB).allowed_dirs == (str(tmp_path),)
    assert UploadPolicy.build(["/"], str(tmp_path), [], str(tmp_path / "log"), MB).allowed_dirs == ("/",)


def test_the_policy_survives_the_journal(hub_dir, tmp_path):
    policy = policy_for(hub_dir, ["."])
    other = tmp_path / "Other.json"
    other.write_text("{}")
    again = UploadPolicy.from_dict(json.loads(json.dumps(policy.as_dict())), extra_secret_files=[str(other)])
    assert again.allowed_dirs == policy.allowed_dirs and again.log_dirs == policy.log_dirs
    assert again.secret_files == (str(hub_dir / "Passwords.json"), str(other))
    assert printed_file(str(other), str(hub_dir), again).kind == SECRET


def test_the_system_folders_that_are_mounts_are_known_by_device():
    devices = dict((folder, device) for device, folder in UploadPolicy.build(None, "/", [], "/nonexistent", 1)
                   .pseudo_devices)
    for folder in ("/proc", "/sys"):
        if os.path.ismount(folder):
            assert devices[folder] == os.stat(folder).st_dev


# ---------------------------------------------------------------- printed_file: the cheap path

# A single word ("done") is not here: it may name a file in the working directory (SPEC §5 step 7:
# any existing file, relative to it), so it costs a stat; prose of several words does not.
PLAIN_LINES = ["row 12 of 50000 processed", "INFO starting import", "", "   ", "all done", "x" * 5000,
               "a/b" * 2000, "caf\ufffd/menu.txt", "nul\0/x.txt"]


@pytest.mark.parametrize("text", PLAIN_LINES, ids=range(len(PLAIN_LINES)))
def test_text_that_cannot_be_a_path_costs_no_system_call(hub_dir, monkeypatch, text):
    policy = policy_for(hub_dir)
    calls = []
    for name in ("stat", "lstat", "open", "access", "readlink"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    assert printed_file(text, str(hub_dir), policy) == Decision(NOT_A_PATH)
    assert calls == []
    # the counter is live: a line that may be a path is looked at
    printed_file("report.csv", str(hub_dir), policy)
    assert "stat" in calls


def test_a_missing_path_is_not_a_path(hub_dir):
    assert printed_file("Done. 5 rows.", str(hub_dir), policy_for(hub_dir)).kind == NOT_A_PATH
    assert printed_file("/no/such/file.csv", str(hub_dir), policy_for(hub_dir)).kind == NOT_A_PATH
    assert printed_file("Passwords.json/x", str(hub_dir), policy_for(hub_dir)).kind == NOT_A_PATH


# ---------------------------------------------------------------- printed_file: allowed

def test_a_file_in_the_working_directory_or_the_temp_folder_is_uploaded(hub_dir, tmp_path):
    (hub_dir / "out.csv").write_bytes(b"a,b\n1,2\n")
    (tmp_path / "temp" / "dump.gz").write_bytes(b"\x1f\x8b" * 10)
    policy = policy_for(hub_dir)
    for text, path, size in [("out.csv", hub_dir / "out.csv", 8), ("  ./out.csv  ", str(hub_dir) + "/./out.csv", 8),
                             (str(tmp_path / "temp" / "dump.gz"), tmp_path / "temp" / "dump.gz", 20),
                             ("/" + str(hub_dir / "out.csv"), hub_dir / "out.csv", 8)]:
        decision = printed_file(text, str(hub_dir), policy)
        assert (decision.kind, decision.path, decision.size) == (UPLOAD, str(path), size)
        assert decision.upload and not decision.refused


def test_a_link_from_outside_to_an_allowed_file_is_judged_by_its_real_path(hub_dir, tmp_path):
    (hub_dir / "out.csv").write_text("x")
    os.symlink(str(hub_dir / "out.csv"), str(tmp_path / "elsewhere.csv"))
    decision = printed_file(str(tmp_path / "elsewhere.csv"), str(hub_dir), policy_for(hub_dir))
    assert decision.kind == UPLOAD and decision.real_path == str(hub_dir / "out.csv")


def test_slash_allows_any_folder_but_not_the_never_list(hub_dir, tmp_path):
    outside = tmp_path / "elsewhere" / "x.txt"
    outside.parent.mkdir()
    outside.write_text("x")
    everywhere = policy_for(hub_dir, ["/"])
    assert printed_file(str(outside), str(hub_dir), everywhere).kind == UPLOAD
    for text in ["Passwords.json", "log/journal.sqlite3", "/proc/self/environ", "/dev/null"]:
        assert printed_file(text, str(hub_dir), everywhere).refused


def test_an_empty_upload_dirs_uploads_nothing(hub_dir):
    (hub_dir / "out.csv").write_text("x")
    assert printed_file("out.csv", str(hub_dir), policy_for(hub_dir, [])).kind == OUTSIDE


# ---------------------------------------------------------------- printed_file: refused

def refused(text, work, policy=None):
    decision = printed_file(text, str(work), policy or policy_for(work))
    assert decision.refused and decision.log_message().startswith(decision.path + ": not uploaded: ")
    return decision


def test_outside_upload_dirs(hub_dir, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.txt").write_text("x")
    os.symlink(str(tmp_path / "elsewhere" / "x.txt"), str(hub_dir / "link.txt"))
    decision = refused(str(tmp_path / "elsewhere" / "x.txt"), hub_dir)
    assert decision.kind == OUTSIDE and "outside UploadDirs" in decision.reason
    assert decision.size is None   # a refused file's size is not told
    decision = refused("link.txt", hub_dir)
    assert decision.kind == OUTSIDE and "its real path is %s" % (tmp_path / "elsewhere" / "x.txt") in decision.reason


@pytest.mark.skipif(not os.path.exists("/etc/shadow"), reason="no /etc/shadow here")
def test_etc_shadow_however_it_is_named(hub_dir):
    for text in ["/etc/shadow", "../../../../../../../../etc/shadow", "//etc//shadow", "/etc/./shadow"]:
        assert refused(text, hub_dir).kind == OUTSIDE


def test_the_passwords_file_by_name_by_link_and_by_hard_link(hub_dir, tmp_path):
    os.symlink(str(hub_dir / "Passwords.json"), str(hub_dir / "settings.json"))
    os.link(str(hub_dir / "Passwords.json"), str(hub_dir / "copy.json"))
    everywhere = policy_for(hub_dir, ["/"])
    for text in ["Passwords.json", "./Passwords.json", str(hub_dir / "Passwords.json"), "settings.json",
                 "copy.json", "log/../Passwords.json"]:
        decision = refused(text, hub_dir, everywhere)
        assert decision.kind == SECRET and "s3cret" not in decision.log_message()


def test_anything_in_the_log_folder(hub_dir):
    os.symlink(str(hub_dir / "log" / "journal.sqlite3"), str(hub_dir / "notes.txt"))
    for text in ["log/journal.sqlite3", str(hub_dir / "log" / "journal.sqlite3"), "notes.txt", "log/."]:
        assert refused(text, hub_dir).kind == LOG_DIR


def test_proc_sys_dev_run_by_path_by_link_and_by_descriptor(hub_dir, tmp_path):
    os.symlink("/proc/self/environ", str(hub_dir / "env.txt"))
    os.symlink("/proc", str(hub_dir / "p"))
    (hub_dir / "data.txt").write_text("allowed, but not through /proc")
    texts = ["/proc/self/environ", "//proc/self/environ", "///proc//self/environ", "/proc/../proc/self/environ",
             "env.txt", "p/self/environ", "/proc/self/status", "/sys/kernel/hostname" if os.path.exists(
                 "/sys/kernel/hostname") else "/sys/.", "/dev/null", "/dev/zero", "/dev/shm/."]
    if os.path.isdir("/run"):
        texts.append("/run/.")
    with open(str(hub_dir / "data.txt"), "rb") as data, open(str(hub_dir / "log" / "journal.sqlite3"), "rb") as journal:
        texts += ["/proc/self/fd/%d" % data.fileno(), "/proc/self/fd/%d" % journal.fileno(),
                  "/proc/%d/fd/%d" % (os.getpid(), journal.fileno())]
        for text in texts:
            assert refused(text, hub_dir, policy_for(hub_dir, ["/"])).kind == SYSTEM, text
        # a link to the hub's own descriptor of its journal: refused by the journal's real path
        os.symlink("/proc/self/fd/%d" % journal.fileno(), str(hub_dir / "fd.txt"))
        assert refused("fd.txt", hub_dir).kind == LOG_DIR


def test_a_link_through_proc_to_a_deleted_file(hub_dir, tmp_path):
    with tempfile.TemporaryFile(dir=str(tmp_path / "temp")) as hidden:   # unlinked, as SQLite's temp files
        hidden.write(b"journal temp data")
        hidden.flush()
        os.symlink("/proc/self/fd/%d" % hidden.fileno(), str(hub_dir / "tmp.txt"))
        decision = refused("tmp.txt", hub_dir)
        assert decision.kind == CHANGED and "(deleted)" in decision.reason
        assert opened_or_refusal(open_for_upload(decision.path, policy_for(hub_dir))) == CHANGED


def test_a_directory_a_fifo_a_socket(hub_dir):
    (hub_dir / "out").mkdir()
    os.mkfifo(str(hub_dir / "pipe.csv"))
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(hub_dir / "s.sock"))
        assert refused("out/", hub_dir).kind == DIRECTORY
        assert refused(".", hub_dir).kind == DIRECTORY
        with deadline(5):
            fifo = refused("pipe.csv", hub_dir)
        assert fifo.kind == SPECIAL and "a FIFO" in fifo.reason
        sock = refused("s.sock", hub_dir)
        assert sock.kind == SPECIAL and "a socket" in sock.reason
    finally:
        server.close()


def test_over_the_size_limit_carries_the_size(hub_dir, tmp_path):
    (hub_dir / "big.bin").write_bytes(b"x" * 1001)
    (hub_dir / "fits.bin").write_bytes(b"x" * 1000)
    decision = refused("big.bin", hub_dir, policy_for(hub_dir, max_bytes=1000))
    assert (decision.kind, decision.size) == (TOO_LARGE, 1001)
    assert printed_file("fits.bin", str(hub_dir), policy_for(hub_dir, max_bytes=1000)).kind == UPLOAD
    assert U.over_limit_message(500 * MB, 100 * MB) == \
        "file of 500.0 MB not uploaded: over the upload limit of 100 MB (--max-upload-mb)"


def as_nobody(work_dir, call):
    """Run call() in a forked child with the uid and gid of nobody; returns what it returns (a str)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            # setuid makes the process undumpable, which hides its own /proc/self/fd from it; the hub
            # never changes its user, so give it back.
            ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)   # PR_SET_DUMPABLE
            os.write(write_end, call().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        result = answer.read().decode()
    os.waitpid(pid, 0)
    return result


def test_a_file_the_hub_cannot_read(hub_dir):
    folder = tempfile.mkdtemp(prefix="hub-unreadable-", dir="/tmp")
    try:
        os.chmod(folder, 0o755)
        secret = os.path.join(folder, "private.txt")
        with open(secret, "w") as handle:
            handle.write("not for the hub")
        os.chmod(secret, 0o000 if os.geteuid() != 0 else 0o600)
        hidden = os.path.join(folder, "closed")
        os.mkdir(hidden)
        with open(os.path.join(hidden, "x.txt"), "w"):
            pass
        os.chmod(hidden, 0o700 if os.geteuid() == 0 else 0o000)
        policy = policy_for(hub_dir, [folder])

        def judge():
            return " ".join([printed_file(secret, folder, policy).kind,
                             opened_or_refusal(open_for_upload(secret, policy)),
                             opened_or_refusal(open_for_upload(secret, policy, check_dirs=False)),
                             printed_file("closed/x.txt", folder, policy).kind])

        # As root, a file that root cannot read is one that another user's hub cannot: nobody's.
        result = as_nobody(folder, judge) if os.geteuid() == 0 else judge()
        assert result == " ".join([UNREADABLE] * 4)
        if os.geteuid() == 0:   # and the same file is readable as root: the refusal came from the mode
            assert printed_file(secret, folder, policy).kind == UPLOAD
    finally:
        os.chmod(os.path.join(folder, "closed"), 0o700)
        for root, dirs, files in os.walk(folder, topdown=False):
            for name in files:
                os.remove(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(folder)


# ---------------------------------------------------------------- open_for_upload

def test_an_allowed_file_is_read_whole_and_closed(hub_dir):
    data = os.urandom(300 * 1024)
    (hub_dir / "out.bin").write_bytes(data)
    opened = open_for_upload(str(hub_dir / "out.bin"), policy_for(hub_dir))
    assert isinstance(opened, Opened) and (opened.name, opened.size) == ("out.bin", len(data))
    chunks = list(opened.chunks())
    assert b"".join(chunks) == data and max(map(len, chunks)) == U.CHUNK_BYTES
    assert opened.fd is None   # closed by the end of the chunks


@pytest.fixture(params=["O_PATH", "plain open"])
def open_branch(request, monkeypatch):
    """Both ways of opening: O_PATH then /proc/self/fd (Linux), and the plain non-blocking open."""
    if request.param == "plain open":
        monkeypatch.setattr(U, "_O_PATH", 0)
    elif not U._O_PATH:
        pytest.skip("no O_PATH here")
    return request.param


def test_a_fifo_swapped_in_after_the_line_was_read_never_blocks(hub_dir, open_branch):
    path = hub_dir / "out.csv"
    path.write_text("a,b\n")
    policy = policy_for(hub_dir)
    assert printed_file("out.csv", str(hub_dir), policy).kind == UPLOAD
    os.remove(str(path))
    os.mkfifo(str(path))   # nobody ever writes to it: an open for reading would wait forever
    with deadline(5):
        decision = open_for_upload(str(path), policy)
    assert decision.kind == SPECIAL and "FIFO" in decision.reason


def test_without_o_path_a_fifo_swapped_in_between_the_look_and_the_open_never_blocks(hub_dir, monkeypatch):
    # The plain open judges the name, then opens: swap the file for a FIFO in exactly that moment
    # (the name's real path is looked up between the two).
    monkeypatch.setattr(U, "_O_PATH", 0)
    path = str(hub_dir / "out.csv")
    with open(path, "w") as handle:
        handle.write("a,b\n")
    realpath = os.path.realpath

    def swap_then_resolve(name, *args, **kwargs):
        if name == path and not stat.S_ISFIFO(os.lstat(path).st_mode):
            os.remove(path)
            os.mkfifo(path)
        return realpath(name, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", swap_then_resolve)
    with deadline(5):
        decision = open_for_upload(path, policy_for(hub_dir))
    assert stat.S_ISFIFO(os.lstat(path).st_mode)   # the swap did happen before the open
    assert decision.kind == SPECIAL


@pytest.mark.parametrize("target, kind", [("/dev/zero", SYSTEM), ("/dev/tty", SYSTEM), ("/proc/self/environ", SYSTEM),
                                          ("Passwords.json", SECRET), ("log/journal.sqlite3", LOG_DIR),
                                          ("/etc/hostname", OUTSIDE)])
def test_a_link_swapped_in_after_the_line_was_read(hub_dir, open_branch, target, kind):
    path = hub_dir / "out.csv"
    path.write_text("a,b\n")
    policy = policy_for(hub_dir)
    assert printed_file("out.csv", str(hub_dir), policy).kind == UPLOAD
    os.remove(str(path))
    os.symlink(target if target.startswith("/") else str(hub_dir / target), str(path))
    if not os.path.exists(str(path)):
        pytest.skip("%s does not exist here" % target)
    with deadline(5):
        assert opened_or_refusal(open_for_upload(str(path), policy)) == kind


def test_a_file_deleted_before_delivery(hub_dir):
    (hub_dir / "out.csv").write_text("x")
    policy = policy_for(hub_dir)
    assert printed_file("out.csv", str(hub_dir), policy).kind == UPLOAD
    os.remove(str(hub_dir / "out.csv"))
    decision = open_for_upload(str(hub_dir / "out.csv"), policy)
    assert decision.kind == CHANGED and decision.reason == "it no longer exists"


def test_a_file_grown_past_the_limit_after_the_check_is_refused_with_its_size(hub_dir, open_branch):
    path = hub_dir / "grows.log"
    path.write_bytes(b"x" * 100)
    policy = policy_for(hub_dir, max_bytes=1000)
    assert printed_file("grows.log", str(hub_dir), policy).kind == UPLOAD
    with open(str(path), "ab") as handle:
        handle.truncate(5000)
    decision = open_for_upload(str(path), policy)
    assert (decision.kind, decision.size) == (TOO_LARGE, 5000)


def test_a_file_growing_after_it_was_opened_is_read_to_its_size_at_open(hub_dir):
    path = hub_dir / "grows.log"
    path.write_bytes(b"a" * 1000)
    opened = open_for_upload(str(path), policy_for(hub_dir, max_bytes=1000))
    with open(str(path), "ab") as handle:
        handle.write(b"b" * (10 * U.CHUNK_BYTES))
    assert b"".join(opened.chunks()) == b"a" * 1000


def test_a_file_that_shrinks_while_it_is_read(hub_dir):
    path = hub_dir / "shrinks.bin"
    path.write_bytes(b"z" * (4 * U.CHUNK_BYTES))
    opened = open_for_upload(str(path), policy_for(hub_dir))
    chunks = opened.chunks()
    assert next(chunks) == b"z" * U.CHUNK_BYTES
    os.truncate(str(path), U.CHUNK_BYTES + 10)
    assert next(chunks) == b"z" * 10
    with pytest.raises(UploadReadError, match="shrank from 262144 to 65546 bytes") as caught:
        next(chunks)
    assert caught.value.path == str(path) and opened.fd is None


def test_a_file_a_person_names_needs_no_upload_dirs_but_obeys_the_never_list(hub_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("named on the command line")
    os.mkfifo(str(tmp_path / "pipe"))
    policy = policy_for(hub_dir, [])
    assert opened_or_refusal(open_for_upload(str(elsewhere), policy)) == OUTSIDE
    assert opened_or_refusal(open_for_upload(str(elsewhere), policy, check_dirs=False)) == UPLOAD
    with deadline(5):
        for path, kind in [(hub_dir / "Passwords.json", SECRET), (hub_dir / "log" / "journal.sqlite3", LOG_DIR),
                           ("/proc/self/environ", SYSTEM), ("/dev/null", SYSTEM), (tmp_path / "pipe", SPECIAL),
                           (tmp_path, DIRECTORY)]:
            assert opened_or_refusal(open_for_upload(str(path), policy, check_dirs=False)) == kind, path


# ---------------------------------------------------------------- the multipart body

def body_for(work, data: bytes, name="out.bin", file_name=None) -> MultipartBody:
    path = work / name
    path.write_bytes(data)
    return MultipartBody(open_for_upload(str(path), policy_for(work)), file_name=file_name)


def test_the_body_parses_back_byte_for_byte(hub_dir):
    # content that looks like multipart framing, every byte value
    data = bytes(range(256)) * 700 + b"\r\n--hub-boundary-\r\n\r\n--" + os.urandom(100_000)
    body = body_for(hub_dir, data, "report.csv")
    raw = b"".join(body)
    assert len(raw) == body.length == len(body)
    assert multipart.parse(raw, body.content_type) == {"file": ("report.csv", data)}
    assert b'; filename="report.csv"\r\n' in raw[:raw.index(b"\r\n\r\n") + 2]   # a plain name stays plain


@pytest.mark.parametrize("name", ['say "hi".csv', "r\u00e9sum\u00e9 \u65e5\u672c.txt", "a\r\nX-Injected: 1.txt",
                                  "back\\slash%41.txt", "tab\there.txt"])
def test_an_awkward_file_name_cannot_break_the_part_header(hub_dir, name):
    data = b"payload"
    body = body_for(hub_dir, data, "plain.bin", file_name=name)
    raw = b"".join(body)
    head = raw[:raw.index(b"\r\n\r\n")].decode("ascii")   # the part's head is pure ASCII
    assert "X-Injected" not in head.split("\r\n")[2:] and head.count("\r\n") == 2
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + body.content_type.encode() + b"\r\n\r\n" + raw)
    (part,) = message.get_payload()
    params = part.get_params(header="content-disposition")
    assert ("name", "file") in params
    plain = [value for key, value in params if key == "filename" and isinstance(value, str)]
    encoded = [value for key, value in params if key == "filename" and isinstance(value, tuple)]
    assert len(plain) == 1 and all(" " <= c <= "~" and c not in '"\\%' for c in plain[0])
    assert [email.utils.collapse_rfc2231_value(value) for value in encoded] == [name]   # filename*: exact
    assert part.get_payload(decode=True) == data
    assert multipart.parse(raw, body.content_type)["file"] == (plain[0], data)
    assert body.file_name == name


def test_a_body_streams_once(hub_dir):
    body = body_for(hub_dir, b"once")
    assert b"once" in b"".join(body)
    with pytest.raises(RuntimeError, match="streams once"):
        list(body)


def test_an_empty_file_is_an_empty_part(hub_dir):
    body = body_for(hub_dir, b"", "empty.txt")
    assert multipart.parse(b"".join(body), body.content_type) == {"file": ("empty.txt", b"")}


def test_streaming_200_mb_keeps_memory_flat(hub_dir):
    path = hub_dir / "sparse.bin"
    with open(str(path), "wb") as handle:
        handle.truncate(200 * 2 ** 20)
        handle.seek(200 * 2 ** 20 - 4)
        handle.write(b"last")
    opened = open_for_upload(str(path), policy_for(hub_dir, max_bytes=300 * MB))
    body = MultipartBody(opened)
    tracemalloc.start()
    try:
        total, tail = 0, b""
        for chunk in body:
            total += len(chunk)
            tail = (tail + chunk)[-64:]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == body.length == 200 * 2 ** 20 + len(body._head) + len(body._tail)
    assert tail.endswith(b"last\r\n--" + body.boundary.encode() + b"--\r\n")
    assert peak < 3 * 2 ** 20, "peak %d bytes" % peak


# ---------------------------------------------------------------- over real HTTP

@pytest.fixture
def run_id(sandbox):
    body = {"fields": {"TRACKOR_KEY": "RUN-1", "IR_STATUS": "Running"},
            "parents": [{"trackor_type": "Integration", "filter": {"TRACKOR_KEY": "INT-1"}}]}
    answer = requests.post(sandbox.url + "/api/v3/trackor_types/IntegrationRun/trackors", json=body, auth=AUTH)
    return answer.json()["TRACKOR_ID"]


def post(sandbox, run_id, data, body):
    return requests.post(sandbox.url + "/api/v3/trackor/%d/file/IR_FILE" % run_id,
                         params={"file_name": body.file_name}, data=data, auth=AUTH, timeout=30,
                         headers={"Content-Type": body.content_type, "Content-Length": str(body.length)})


def test_the_body_uploads_over_http_with_its_content_length(sandbox, run_id, hub_dir):
    data = os.urandom(3 * 2 ** 20 + 17)
    body = body_for(hub_dir, data, "export \u00e9.bin")
    answer = post(sandbox, run_id, body, body)
    assert answer.status_code == 200, answer.text
    assert answer.request.headers["Content-Length"] == str(body.length)
    assert "Transfer-Encoding" not in answer.request.headers
    got = requests.get(sandbox.url + "/api/v3/trackor/%d/file/IR_FILE" % run_id, auth=AUTH)
    assert got.content == data
    assert sandbox.trackors("IntegrationRun")[0]["IR_FILE"]["file_name"] == "export \u00e9.bin"


class ShrinkAfterFirstChunk:
    """The body, with the file cut short once its first chunk has gone out."""

    def __init__(self, body, path):
        self.body, self.path = body, path

    def __len__(self):
        return self.body.length

    def __iter__(self):
        for number, chunk in enumerate(self.body):
            yield chunk
            if number == 1:
                os.truncate(self.path, 1000)


def test_a_file_that_shrinks_mid_request_raises_itself_not_a_connection_error(sandbox, run_id, hub_dir):
    body = body_for(hub_dir, b"q" * (2 * 2 ** 20), "shrinks.bin")
    with pytest.raises(UploadReadError, match="shrank"):
        post(sandbox, run_id, ShrinkAfterFirstChunk(body, str(hub_dir / "shrinks.bin")), body)
    assert sandbox.trackors("IntegrationRun")[0]["IR_FILE"] is None   # nothing half-stored
    again = body_for(hub_dir, b"whole again", "shrinks.bin")           # the retry: opened afresh
    assert post(sandbox, run_id, again, again).status_code == 200


def test_a_single_word_naming_a_file_in_the_working_directory_is_a_file(tmp_path):
    (tmp_path / "report").write_text("rows\n")
    policy = UploadPolicy.build(None, str(tmp_path), [], str(tmp_path / "log"), 1_000_000)
    decision = printed_file("report", str(tmp_path), policy)
    assert decision.upload and decision.path == str(tmp_path / "report")
    assert printed_file("nothing", str(tmp_path), policy).kind == NOT_A_PATH
