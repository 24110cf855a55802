"""Printed paths upload only what the child meant to hand over (issue 13; SPEC §3 UploadDirs, §5 step 7,
§6 -f), end to end: real children (tests/fixtures), the real wrapper (in-process, or as a process
where its memory, its reads or a hang are the point), the sandbox over real HTTP, and the files
read back from OneVizion's File fields byte for byte.

Every refused path is shown three ways: its line is an ordinary record (no file), no file in the
sandbox holds its bytes, and the hub's log says why, by path, once per path (each is printed twice).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time

import pytest
import requests

import sandbox as sandbox_pkg
import sandbox.server
from hub.journal import Conditions, Journal
from hub.state import Origin, ParseState, RunRow
from tests.conftest import write_passwords
from tests.hubtest import fixture_command

MB = 1000 * 1000
# Eight lines naming 50 MB files: the sandbox's 20 MiB request cap would refuse them (413); a
# real installation takes them. The test raises the cap of its in-process sandbox only.
LARGE_BODY = 128 << 20


# ---------------------------------------------------------------- helpers

def only_run(hub, key):
    runs = hub.runs(key)
    assert len(runs) == 1, runs
    return runs[0]


def download(hub, trackor_id, field):
    """A File field's bytes as OneVizion serves them (GET .../file/{field}); None when empty."""
    answer = requests.get(f"{hub.sandbox.url}/api/v3/trackor/{trackor_id}/file/{field}", auth=hub.auth, timeout=60)
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    return answer.content


def stored_files(hub):
    """Every file the sandbox holds, as (file name, bytes)."""
    store = hub.sandbox.store
    with store.lock:
        return [(name, bytes(data)) for name, data in store.db.execute("SELECT file_name, data FROM blobs")]


def why_not(hub, path):
    """The hub's log lines saying why `path` (exactly) was not uploaded ("run KEY: PATH: not uploaded: WHY")."""
    return [line for line in hub.hub_log().splitlines() if f": {path}: not uploaded: " in line]


def assert_refused_once(hub, path, reason):
    lines = why_not(hub, path)
    assert len(lines) == 1, (path, lines)
    assert reason in lines[0].split(f": {path}: not uploaded: ", 1)[1], lines[0]


def assert_ordinary_lines(hub, run_key, texts):
    """Each text is a line of the run (merged records unfolded: a flood of lines shares records),
    of type Info, and no record of the run holds a file."""
    records = hub.logs(run_key)
    assert all(r["IL_FILE"] is None for r in records), [r for r in records if r["IL_FILE"]]
    lines = hub.lines(run_key, "Info")
    for text in texts:
        assert text in lines, (text, lines)


def content(size, seed):
    """Bytes that make a wrong or shifted upload show: every byte value, then a pattern of the seed."""
    head = bytes(range(256)) + b"\r\n--boundary-like--\r\n\0"
    block = bytes((seed * 31 + i * 7) % 256 for i in range(4093))
    return (head + block * (size // len(block) + 1))[:size]


class Watch(threading.Thread):
    """Reads a running process's peak memory (VmHWM, /proc/PID/status) and bytes read (rchar,
    /proc/PID/io) every 10 ms until it exits; `peak_mb` and `read_mb` are the last values read."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.rchar = pid, 0, 0
        self.start()

    def run(self):
        while True:
            try:
                with open(f"/proc/{self.pid}/status") as status:
                    fields = dict(line.split(":", 1) for line in status if ":" in line)
                if fields.get("State", "").strip().startswith("Z"):
                    return      # a zombie: its memory is gone, the last values stand
                with open(f"/proc/{self.pid}/io") as io:
                    counters = dict(line.split(":", 1) for line in io if ":" in line)
            except OSError:
                return
            if "VmHWM" in fields:
                self.peak_kb = max(self.peak_kb, int(fields["VmHWM"].split()[0]))
            self.rchar = max(self.rchar, int(counters.get("rchar", "0")))
            time.sleep(0.01)

    @property
    def peak_mb(self):
        return self.peak_kb / 1024

    @property
    def read_mb(self):
        return self.rchar / MB


def hold_final_status(hub, seconds=1.5):
    """Answer the run's first final status with a 503 after `seconds` (it is sent again and lands):
    the wrapper owes nothing else by then, so a Watch sees its memory and reads after every upload."""
    return hub.sandbox.add_rule(method="PUT", path=r"^/api/v3/trackors/\d+$", body_contains="IR_FINISH",
                                status=503, delay_ms=int(seconds * 1000), times=1)


def hold_deliveries(hub):
    """Every Log record create and every file upload answered 503 (not stored) until the rule is
    removed: the lines are read and judged, their delivery comes later."""
    return hub.sandbox.add_rule(method="POST", status=503,
                                path=r"^/api/v3/(trackor_types/IntegrationLog/trackors|trackor/\d+/file/)")


def run_wrapper_process(hub, integrations, *args, timeout=120):
    """IntegrationWrapper.py as a real process, watched; (exit code, stdout, stderr, Watch, seconds)."""
    started = time.monotonic()
    process = hub.spawn("IntegrationWrapper.py", "-i", integrations, *args)
    watch = Watch(process.pid)
    try:
        out, err = process.communicate(timeout=timeout)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    watch.join(5)
    return process.returncode, out, err, watch, time.monotonic() - started


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch):
    """A temp folder of the test's own as $TMPDIR: then the rest of tmp_path (itself under /tmp) is
    outside the default UploadDirs."""
    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


# ---------------------------------------------------------------- refused: the never list and UploadDirs

def test_ls_in_the_hubs_folder_logs_the_names_and_uploads_nothing(hub):
    """The README's cron lines cd into the hub's folder: `ls` there names Passwords.json (the hub's
    own, password inside) and log/. The lines are records; nothing is uploaded."""
    key = hub.add_integration("Lister")
    work = hub.tmp                                   # holds hub.passwords and hub.log_dir
    os.makedirs(os.path.join(work, "conf"))
    integrations = os.path.join(work, "conf", "Integration.json")
    with open(integrations, "w") as out:
        json.dump([{"IntegrationName": "Lister", "ExecutablePath": "ls", "ExecutableWorkingDir": work}], out)
    assert hub.wrapper(integrations) == 0
    run = only_run(hub, key)
    assert sorted(hub.lines(run["TRACKOR_KEY"])) == ["Passwords.json", "conf", "log"]
    assert_ordinary_lines(hub, run["TRACKOR_KEY"], ["Passwords.json"])
    assert run["IR_FILE"] is None and stored_files(hub) == []
    assert_refused_once(hub, os.path.join(work, "Passwords.json"), "it is the Passwords.json the hub was given")
    assert sandbox_pkg.PASSWORD not in hub.hub_log()


def test_secrets_system_files_and_the_hubs_own_files_are_ordinary_lines(hub, tmp_path):
    """/etc/shadow however it is named, the hub's journal and log, the wrapper's environment by
    //proc and by a link into /proc, and the wrapper's open journal and log by /proc/self/fd/N:
    each an ordinary line, not in OneVizion, the hub's log saying why once per path."""
    key = hub.add_integration("Leaky")
    work = hub.tmp
    os.symlink("/proc/self/environ", os.path.join(work, "environ.txt"))
    hub_log = os.path.join(hub.log_dir, "hub-%s.log" % time.strftime("%Y-%m-%d"))
    up = "../" * (os.path.realpath(work).count("/") + 2)       # past the root: the kernel stops there
    named = ["/etc/shadow", up + "etc/shadow", "log/journal.sqlite3", hub_log, "//proc/self/environ", "environ.txt"]
    lines = [line for path in named for line in (path, path)]
    integrations = hub.integrations_file({
        "IntegrationName": "Leaky", "ExecutableWorkingDir": work,
        "ExecutablePath": fixture_command("names_parent_fds.py", *lines, "--", "journal.sqlite3", "hub-")})
    assert hub.wrapper(integrations) == 0            # 0: the fixture found the wrapper's journal and log open
    run = only_run(hub, key)
    printed = hub.lines(run["TRACKOR_KEY"])
    fd_lines = sorted({line for line in printed if line.startswith("/proc/self/fd/")})
    assert len(fd_lines) >= 2, printed
    assert_ordinary_lines(hub, run["TRACKOR_KEY"], named + fd_lines)
    assert len(printed) == len(lines) + 2 * len(fd_lines)
    assert run["IR_FILE"] is None and stored_files(hub) == []

    assert_refused_once(hub, "/etc/shadow", "it is outside UploadDirs")
    assert_refused_once(hub, os.path.join(work, up + "etc/shadow"), "(its real path is /etc/shadow)")
    assert_refused_once(hub, os.path.join(work, "log/journal.sqlite3"), "it is in the hub's log folder")
    assert_refused_once(hub, hub_log, "it is in the hub's log folder")
    assert_refused_once(hub, "/proc/self/environ", "it is under /proc")
    assert_refused_once(hub, os.path.join(work, "environ.txt"), "it is under /proc")
    for line in fd_lines:
        assert_refused_once(hub, line, "it is under /proc")


# ---------------------------------------------------------------- allowed: byte for byte, in the record and the run

# (case, UploadDirs or None for the default, the folder the file is in (under tmp_path), TMPDIR (under
#  tmp_path) or None for unset, and which of the other printed files are uploaded: notes.txt in the
#  working directory, stray.txt in tmp_path/elsewhere (under /tmp, not under $TMPDIR))
ALLOWED = [
    ("the working directory", None, "work", "temp", {"notes.txt"}),
    ("the temp folder $TMPDIR", None, "temp", "temp", {"notes.txt"}),
    ("/tmp when $TMPDIR is unset", None, "elsewhere", None, {"notes.txt", "stray.txt"}),
    ("an UploadDirs folder", ["../outbox"], "outbox", "temp", set()),
    ('UploadDirs ["/"]: any folder', ["/"], "elsewhere", "temp", {"notes.txt", "stray.txt"}),
]


@pytest.mark.parametrize("case,upload_dirs,folder,tmpdir,others", ALLOWED, ids=[c[0] for c in ALLOWED])
def test_an_allowed_file_arrives_byte_for_byte_in_its_record_and_the_run(hub, tmp_path, monkeypatch, case,
                                                                         upload_dirs, folder, tmpdir, others):
    key = hub.add_integration("Reporter")
    work = tmp_path / "work"
    for name in ("work", "temp", "outbox", "elsewhere"):
        (tmp_path / name).mkdir(exist_ok=True)
    if tmpdir is None:
        monkeypatch.delenv("TMPDIR", raising=False)
        assert os.path.realpath(tmp_path).startswith("/tmp/")    # else this case proves nothing
    else:
        monkeypatch.setenv("TMPDIR", str(tmp_path / tmpdir))
    data = content(300_000, seed=len(case))
    report = tmp_path / folder / "report 1.bin"
    report.write_bytes(data)
    # Beside it: a file of the working directory, one elsewhere under /tmp, and the never list,
    # which no UploadDirs lifts.
    (work / "notes.txt").write_bytes(b"working notes\n")
    stray = tmp_path / "elsewhere" / "stray.txt"
    stray.write_bytes(b"stray\n")
    files = {"report 1.bin": data, "notes.txt": b"working notes\n", "stray.txt": b"stray\n"}
    lines = ["report 1.bin" if folder == "work" else str(report), "notes.txt", str(stray), hub.passwords,
             os.path.join(hub.log_dir, "journal.sqlite3")]
    entry = {"IntegrationName": "Reporter", "ExecutableWorkingDir": str(work),
             "ExecutablePath": fixture_command("says.py", *("out:" + line for line in lines))}
    if upload_dirs is not None:
        entry["UploadDirs"] = upload_dirs
    assert hub.wrapper(hub.integrations_file(entry)) == 0

    run = only_run(hub, key)
    records = hub.logs(run["TRACKOR_KEY"])
    assert [r["IL_MESSAGE"] for r in records] == lines
    uploaded = ["report 1.bin"] + [name for name in ("notes.txt", "stray.txt") if name in others]
    for record, name in zip(records, ["report 1.bin", "notes.txt", "stray.txt"]):
        if name in uploaded:
            assert record["IL_FILE"]["file_name"] == name
            assert download(hub, record["TRACKOR_ID"], "IL_FILE") == files[name]
        else:
            assert record["IL_FILE"] is None
            assert_refused_once(hub, os.path.join(str(work), record["IL_MESSAGE"]), "it is outside UploadDirs")
    assert records[3]["IL_FILE"] is None and records[4]["IL_FILE"] is None
    # The run's File: the latest printed file that was uploaded.
    assert run["IR_FILE"]["file_name"] == uploaded[-1]
    assert download(hub, run["TRACKOR_ID"], "IR_FILE") == files[uploaded[-1]]
    assert sorted(name for name, _ in stored_files(hub)) == sorted(uploaded + uploaded[-1:])
    assert_refused_once(hub, hub.passwords, "it is the Passwords.json the hub was given")
    assert_refused_once(hub, os.path.join(hub.log_dir, "journal.sqlite3"), "it is in the hub's log folder")


# ---------------------------------------------------------------- changed between the line and its delivery

def test_a_file_swapped_for_a_fifo_before_delivery_neither_hangs_the_wrapper_nor_goes_up(hub, tmp_path):
    """The line is read and judged a regular file; OneVizion answers 503 to its record and file
    until the child has swapped the file for a FIFO nobody writes to; then delivery opens it."""
    key = hub.add_integration("Swapper")
    path = tmp_path / "work" / "result.csv"
    path.parent.mkdir()
    path.write_bytes(b"a,b\n1,2\n")
    rule = hold_deliveries(hub)
    integrations = hub.integrations_file({"IntegrationName": "Swapper", "ExecutableWorkingDir": str(path.parent),
                                          "ExecutablePath": fixture_command("changes_before_delivery.py",
                                                                            hub.sandbox.url, str(path), "fifo",
                                                                            str(rule["id"]))})
    code, out, err, _, seconds = run_wrapper_process(hub, integrations, timeout=60)
    assert code == 0, err
    assert seconds < 20
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    assert_ordinary_lines(hub, run["TRACKOR_KEY"], [str(path)])
    assert run["IR_FILE"] is None and stored_files(hub) == []
    assert_refused_once(hub, str(path), "it is not a regular file (a FIFO)")
    assert (hub.journal_rows("runs"), hub.journal_rows("records")) == (0, 0)


def test_a_file_swapped_for_a_fifo_while_the_run_waits_in_the_journal_does_not_hang_the_replay(hub, tmp_path):
    """The wrapper leaves the line's record in the journal (OneVizion answers 503 to it); the file
    becomes a FIFO; --replay delivers the record as an ordinary line, at once, every time."""
    key = hub.add_integration("Swapper")
    path = tmp_path / "result.csv"
    path.write_bytes(b"a,b\n1,2\n")
    rule = hold_deliveries(hub)
    integrations = hub.integrations_file({"IntegrationName": "Swapper",
                                          "ExecutablePath": fixture_command("says.py", f"out:{path}")})
    assert hub.wrapper(integrations, "--drain-seconds", "1") == 75
    assert hub.journal_rows("records WHERE file_path IS NOT NULL") == 1     # judged a file to upload
    path.unlink()
    os.mkfifo(path)
    hub.sandbox.server.rules.remove(rule["id"])
    for _ in range(2):
        started = time.monotonic()
        replay = hub.script("IntegrationWrapper.py", "--replay", timeout=60)
        assert replay.returncode == 0, replay.stderr + replay.stdout
        assert time.monotonic() - started < 10
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    assert_ordinary_lines(hub, run["TRACKOR_KEY"], [str(path)])
    assert run["IR_FILE"] is None and stored_files(hub) == []
    assert_refused_once(hub, str(path), "it is not a regular file (a FIFO)")
    assert (hub.journal_rows("runs"), hub.journal_rows("records")) == (0, 0)


def test_a_run_row_written_while_a_parse_commits_keeps_the_parse_position(tmp_path):
    """The defect the replay test above found, without its timing: the wrapper's supervising
    thread wrote the run's row (its final status) holding the parse position from before the
    parse job that had just committed the output's end and released its segment file; the
    journal went back to that position, and the run waited for output that was gone: every
    later --replay spent its drain time and exited 75, and the run never closed."""
    journal = Journal(str(tmp_path), "installation", Conditions(lambda text: None, logging.getLogger("test")))
    row = RunRow("RUN-1", "installation", "INT-1", Origin.WRAPPER, {}, started_at=1.0, last_activity=1.0)
    journal.put_run(row)
    journal.put_records("RUN-1", [], ParseState(2, 5, {}, True), last_activity=9.0)   # a parse job's commit
    row.final.fields = {"IR_STATUS": "Executed without Warnings"}                     # meanwhile, elsewhere
    journal.put_run(row)                                                                # row.parse is still old
    journal.flush()                                                                     # writes are queued
    kept = journal.run("RUN-1")
    assert (kept.parse.next_chunk, kept.parse.next_seq, kept.parse.ended) == (2, 5, True)
    assert kept.last_activity == 9.0 and kept.final.fields == {"IR_STATUS": "Executed without Warnings"}
    fresh = RunRow("RUN-2", "installation", "INT-1", Origin.WRAPPER, {}, started_at=1.0,
                   parse=ParseState(3, 4, {}, False))
    journal.put_run(fresh)                                                              # a new row: all of it
    journal.flush()
    assert journal.run("RUN-2").parse.next_chunk == 3
    journal.close()


def test_a_file_grown_past_the_limit_before_delivery_becomes_the_warning_and_is_not_read(hub, tmp_path):
    """Printed at 0.5 MB under --max-upload-mb 1, grown to 500 MB before delivery (OneVizion answers
    503 until then): the record is the Warning the SPEC describes, nothing is uploaded, and the
    wrapper neither reads the file nor grows (the issue saw 2.5 GB)."""
    key = hub.add_integration("Grower")
    path = tmp_path / "work" / "export.dat"
    path.parent.mkdir()
    path.write_bytes(content(500_000, seed=3))
    held = hold_final_status(hub)
    rule = hold_deliveries(hub)
    integrations = hub.integrations_file({"IntegrationName": "Grower", "ExecutableWorkingDir": str(path.parent),
                                          "ExecutablePath": fixture_command("changes_before_delivery.py",
                                                                            hub.sandbox.url, str(path),
                                                                            "grow:%d" % (500 * MB), str(rule["id"]))})
    code, out, err, watch, seconds = run_wrapper_process(hub, integrations, "--max-upload-mb", "1", timeout=60)
    assert code == 0, err
    run = only_run(hub, key)
    [record] = hub.logs(run["TRACKOR_KEY"])
    assert record["IL_MESSAGE_TYPE"] == "Warning" and record["IL_FILE"] is None
    assert record["IL_DESCRIPTION"] == (f"{path}: file of 500.0 MB not uploaded: over the upload limit of 1 MB "
                                        f"(--max-upload-mb)")
    assert run["IR_FILE"] is None and stored_files(hub) == []
    assert_refused_once(hub, str(path), "it is 500.0 MB, over the upload limit of 1 MB")
    assert held["id"] not in [r["id"] for r in hub.sandbox.rules()]     # the Watch saw the wrapper after the uploads
    print(f"\ngrown file: wrapper peak memory {watch.peak_mb:.1f} MB, read {watch.read_mb:.1f} MB in all")
    assert 0 < watch.peak_mb < 100 and 0 < watch.read_mb < 100


# ---------------------------------------------------------------- memory: uploads stream

@pytest.fixture
def uploads_in_flight(monkeypatch):
    """Large request bodies for the in-process sandbox, and a count of the uploads a rule holds at
    once (each has been received whole by then): {"now": n, "peak": n}."""
    monkeypatch.setattr(sandbox.server, "MAX_BODY", LARGE_BODY)
    counts, lock = {"now": 0, "peak": 0}, threading.Lock()
    original = sandbox.server.Handler._ruled

    def counted(handler, rule, path, query, body):
        if "/file/" not in path:
            return original(handler, rule, path, query, body)
        with lock:
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
        try:
            return original(handler, rule, path, query, body)
        finally:
            with lock:
                counts["now"] -= 1

    monkeypatch.setattr(sandbox.server.Handler, "_ruled", counted)
    return counts


def write_large(path, size, seed):
    """A file of `size` bytes unlike any other seed's; its SHA-256."""
    block = content(1 << 20, seed)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            piece = block[:min(left, len(block))]
            out.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


def test_eight_concurrent_50_mb_uploads_keep_the_wrappers_peak_memory_under_100_mb(hub, tmp_path, uploads_in_flight):
    """Eight lines naming 50 MB files. Every record's upload is stored, then its answer held for
    2 s: all eight are in flight at once, each sent whole (a hub holding a file's bytes would hold
    400 MB then). The wrapper process's VmHWM stays under 100 MB; every file arrives byte for byte."""
    key = hub.add_integration("Exporter")
    work = tmp_path / "work"
    work.mkdir()
    digests = {}
    for n in range(1, 9):
        digests[f"part{n}.bin"] = write_large(work / f"part{n}.bin", 50 * MB, seed=n)
    hub.sandbox.add_rule(method="POST", path=r"^/api/v3/trackor/\d+/file/IL_FILE$", after_commit=True,
                         delay_ms=2000, json=1)
    held = hold_final_status(hub)
    integrations = hub.integrations_file({"IntegrationName": "Exporter", "ExecutableWorkingDir": str(work),
                                          "ExecutablePath": fixture_command(
                                              "says.py", *(f"out:part{n}.bin" for n in range(1, 9)))})
    code, out, err, watch, seconds = run_wrapper_process(hub, integrations, timeout=300)
    assert code == 0, err
    assert held["id"] not in [r["id"] for r in hub.sandbox.rules()]
    print(f"\neight 50 MB uploads: wrapper peak memory {watch.peak_mb:.1f} MB, {uploads_in_flight['peak']} "
          f"uploads in flight at once, {seconds:.1f} s")
    assert uploads_in_flight["peak"] == 8
    assert 0 < watch.peak_mb < 100

    run = only_run(hub, key)
    records = hub.logs(run["TRACKOR_KEY"])
    assert [r["IL_MESSAGE"] for r in records] == [f"part{n}.bin" for n in range(1, 9)]
    for record in records:
        name, data = hub.sandbox.store.download(record["TRACKOR_ID"], "IL_FILE")
        assert (name, sha256_of(data)) == (record["IL_MESSAGE"], digests[record["IL_MESSAGE"]])
    name, data = hub.sandbox.store.download(run["TRACKOR_ID"], "IR_FILE")
    assert (name, sha256_of(data)) == ("part8.bin", digests["part8.bin"])


# ---------------------------------------------------------------- the run's File: the latest printed

@pytest.mark.parametrize("slow", ["first upload held by OneVizion", "first file large"])
def test_the_runs_file_is_the_last_printed_whatever_order_the_uploads_finish_in(hub, tmp_path, monkeypatch, slow):
    """The second file is printed while the first one's upload into the run is under way and slow:
    held 1.5 s and answered 503 (a hub that retried it after the second went up would end with the
    first), or 50 MB against a few bytes (two uploads into the run at once would end with the
    large one). The run's File is the second, byte for byte; each record has its own."""
    monkeypatch.setattr(sandbox.server, "MAX_BODY", LARGE_BODY)
    key = hub.add_integration("Twice")
    work = tmp_path / "work"
    work.mkdir()
    first, second = work / "first.bin", work / "second.csv"
    second.write_bytes(b"the latest,printed\n")
    if slow.startswith("first upload"):
        first.write_bytes(content(200_000, seed=1))
        hub.sandbox.add_rule(method="POST", path=r"^/api/v3/trackor/\d+/file/IR_FILE$", status=503, delay_ms=1500,
                             times=1)
        when = "ruled"
    else:
        write_large(first, 50 * MB, seed=1)
        when = "open:2"
    first_digest = sha256_of(first.read_bytes())
    integrations = hub.integrations_file({"IntegrationName": "Twice", "ExecutableWorkingDir": str(work),
                                          "ExecutablePath": fixture_command("prints_second_when.py", when,
                                                                            hub.sandbox.url, str(first), str(second))})
    assert hub.wrapper(integrations) == 0
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"        # the fixture saw the moment it waits for
    name, data = hub.sandbox.store.download(run["TRACKOR_ID"], "IR_FILE")
    assert (name, data) == ("second.csv", b"the latest,printed\n")
    first_record, second_record = hub.logs(run["TRACKOR_KEY"])
    name, data = hub.sandbox.store.download(first_record["TRACKOR_ID"], "IL_FILE")
    assert (name, sha256_of(data)) == ("first.bin", first_digest)
    assert download(hub, second_record["TRACKOR_ID"], "IL_FILE") == b"the latest,printed\n"


# ---------------------------------------------------------------- IntegrationWrapperAddingLog.py -f

def start_run(hub):
    started = hub.script("IntegrationWrapperRunController.py", "-i", "INT-1", "-t", "start")
    assert started.returncode == 0, started.stderr
    return started.stdout.strip()


def sent(hub):
    """What the sandbox was asked to change so far."""
    stats = hub.sandbox.stats()
    return {kind: stats.get(kind, 0) for kind in ("create", "update", "upload", "ruled")}


NEVER = [
    ("the Passwords.json given with -p", lambda hub, tmp: hub.passwords, "it is the Passwords.json the hub was given"),
    ("a link to it", lambda hub, tmp: _link(tmp / "creds.json", hub.passwords), "it is the Passwords.json"),
    ("a hard link to it", lambda hub, tmp: _link(tmp / "copy.json", hub.passwords, hard=True),
     "it is a link to a file the hub was given"),
    ("the journal", lambda hub, tmp: os.path.join(hub.log_dir, "journal.sqlite3"), "it is in the hub's log folder"),
    ("the hub's log", lambda hub, tmp: os.path.join(hub.log_dir, "hub-%s.log" % time.strftime("%Y-%m-%d")),
     "it is in the hub's log folder"),
    ("/proc/self/environ", lambda hub, tmp: "/proc/self/environ", "it is under /proc"),
]


def _link(link, target, hard=False):
    (os.link if hard else os.symlink)(target, str(link))
    return str(link)


@pytest.mark.parametrize("case,path_of,reason", NEVER, ids=[c[0] for c in NEVER])
def test_adding_log_f_refuses_the_never_list_with_exit_2_and_sends_nothing(hub, tmp_path, case, path_of, reason):
    run_key = start_run(hub)
    (tmp_path / "elsewhere").mkdir()
    path = path_of(hub, tmp_path / "elsewhere")
    before = sent(hub)
    done = hub.script("IntegrationWrapperAddingLog.py", "-i", "INT-1", "-w", "Info", "-m", "see the file", "-f", path)
    assert done.returncode == 2, done.stderr
    assert f"-f {path}: not uploaded: " in done.stderr and reason in done.stderr and "nothing was sent" in done.stderr
    assert "Traceback" not in done.stderr and sandbox_pkg.PASSWORD not in done.stderr + done.stdout
    assert sent(hub) == before and hub.logs(run_key) == [] and stored_files(hub) == []


@pytest.mark.parametrize("where", ["a folder outside every UploadDirs", "/etc/hosts"])
def test_adding_log_f_uploads_any_other_readable_file_byte_for_byte(hub, tmp_path, tmpdir_env, where):
    """A person named the file: UploadDirs does not apply ($TMPDIR and the working directory are
    elsewhere)."""
    run_key = start_run(hub)
    if where == "/etc/hosts":
        path = "/etc/hosts"
    else:
        (tmp_path / "elsewhere").mkdir()
        path = str(tmp_path / "elsewhere" / "result.bin")
        with open(path, "wb") as out:
            out.write(content(250_000, seed=9))
    with open(path, "rb") as handle:
        data = handle.read()
    done = hub.script("IntegrationWrapperAddingLog.py", "-i", "INT-1", "-w", "Info", "-m", "see the file", "-f", path)
    assert done.returncode == 0, done.stderr
    [record] = hub.logs(run_key)
    assert record["IL_FILE"]["file_name"] == os.path.basename(path)
    assert download(hub, record["TRACKOR_ID"], "IL_FILE") == data


def test_adding_log_f_streams_a_95_mb_file(hub, tmp_path, monkeypatch, uploads_in_flight):
    """The upload is stored, then its answer held 1.5 s: the script has sent the whole body by
    then, and its peak memory stays far below the file (a body read whole would add 95 MB)."""
    monkeypatch.setenv("HUB_DELIVERY_SECONDS", "10")     # the held answer is not "OneVizion did not confirm"
    run_key = start_run(hub)
    path = tmp_path / "dump.bin"
    digest = write_large(path, 95 * MB, seed=5)
    hub.sandbox.add_rule(method="POST", path=r"^/api/v3/trackor/\d+/file/IL_FILE$", after_commit=True,
                         delay_ms=1500, json=1)
    process = hub.spawn("IntegrationWrapperAddingLog.py", "-i", "INT-1", "-w", "Info", "-m", "dump", "-f", str(path))
    watch = Watch(process.pid)
    out, err = process.communicate(timeout=120)
    watch.join(5)
    assert process.returncode == 0, err
    assert uploads_in_flight["peak"] == 1
    print(f"\nAddingLog -f 95 MB: peak memory {watch.peak_mb:.1f} MB")
    assert 0 < watch.peak_mb < 60
    [record] = hub.logs(run_key)
    name, data = hub.sandbox.store.download(record["TRACKOR_ID"], "IL_FILE")
    assert (name, sha256_of(data)) == ("dump.bin", digest)


class SlowLink:
    """A TCP relay in front of the sandbox that carries what the hub sends at `rate` bytes a second
    (answers come back at full speed): a slow uplink to OneVizion, with small buffers so that the
    hub's sending follows it."""

    def __init__(self, port, rate):
        self.port, self.rate, self.sockets = port, rate, []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, self.rate), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pipe(source, target, rate):
        try:
            while True:
                data = source.recv(16 << 10)
                if not data:
                    break
                target.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def test_adding_log_f_over_a_slow_link_is_not_given_up_while_it_streams(hub, tmp_path, monkeypatch):
    """16 MB at 4 MB/s: four seconds of upload, twice the script's patience for a delivery without
    progress (HUB_DELIVERY_SECONDS=2). Bytes streaming out are progress: the script waits for its
    upload instead of leaving it to the journal mid-stream (exit 75), which a link this slow would
    make of every attempt."""
    run_key = start_run(hub)
    link = SlowLink(hub.sandbox.port, 4 * MB)
    try:
        write_passwords(tmp_path, link.url)          # hub.passwords now leads through the slow link
        monkeypatch.setenv("HUB_DELIVERY_SECONDS", "2")
        path = tmp_path / "slow.bin"
        digest = write_large(path, 16 * MB, seed=6)
        started = time.monotonic()
        done = hub.script("IntegrationWrapperAddingLog.py", "-i", "INT-1", "-w", "Info", "-m", "slow", "-f",
                          str(path), "-r", run_key)
        seconds = time.monotonic() - started
    finally:
        link.close()
    assert done.returncode == 0, done.stderr
    assert seconds > 3.5                             # the link was as slow as meant
    [record] = hub.logs(run_key)
    name, data = hub.sandbox.store.download(record["TRACKOR_ID"], "IL_FILE")
    assert (name, sha256_of(data)) == ("slow.bin", digest)
