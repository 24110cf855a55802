"""The journal survives its own disk, and stays small (SPEC §5 "The journal's own faults",
"Nothing is lost"; issue 12). Real wrapper processes against the sandbox over real HTTP.

A full disk comes two ways, and the tests that can take both run with both:
- "tmpfs": the log folder is a small tmpfs (2 MB), mounted by the test (root only; skipped
  with the reason where mounting is not permitted) and filled for real;
- "injected": hub.spool's test hook, HUB_TEST_STORAGE_FAULT=PATH: while PATH exists, the
  spool's, the journal's and the hub's log's writes fail as a full disk does (any machine).
A journal locked by another process is a real second sqlite3 connection holding BEGIN
EXCLUSIVE past the busy timeout (shortened by HUB_TEST_BUSY_SECONDS). Bad log folders are
read-only mounts (root is not stopped by permission bits) and a user without rights.

Figures (sizes, peaks, durations) are printed: `pytest -s` shows them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from hub.journal import disk_usage
from tests.conftest import REPO_ROOT
from tests.hubtest import fixture_command

MB = 1 << 20
STDERR_NOISE = ("Traceback", "--- Logging error ---")


def flood_line(i: int) -> str:
    return "line %06d " % i + "x" * 88


def flooded(count: int):
    return [flood_line(i) for i in range(1, count + 1)]


def wait_for(condition, seconds=30.0, what="condition", step=0.02):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def only_run(hub, key):
    [run] = hub.runs(key)
    return run


def output_lines(hub, run_key):
    """The child's lines as delivered (Info records, merged ones unfolded), in order: by Log ID,
    as text (past line 999,999 a letter goes before the longer number, so the order holds)."""
    records = sorted(hub.logs(run_key), key=lambda r: r["TRACKOR_KEY"])
    return [line for r in records if r["IL_MESSAGE_TYPE"] == "Info" for line in r["IL_DESCRIPTION"].split("\n")]


def no_noise(stderr: str) -> None:
    for noise in STDERR_NOISE:
        assert noise not in stderr, stderr[-3000:]


def storage_warning(hub, run_key) -> str:
    """The Warning record the run ended with about the hub's storage (its full text)."""
    found = [r["IL_DESCRIPTION"] for r in hub.logs(run_key)
             if r["IL_MESSAGE_TYPE"] == "Warning" and "local storage was in trouble" in r["IL_DESCRIPTION"]]
    assert len(found) == 1, [r["IL_MESSAGE"] for r in hub.logs(run_key) if r["IL_MESSAGE_TYPE"] != "Info"]
    return found[0]


def set_aside(log_dir):
    return sorted(name for name in os.listdir(log_dir) if ".damaged-" in name)


# -- mounts ------------------------------------------------------------------------------------

def _mount(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return subprocess.CompletedProcess(args, 127, "", "no mount command")


def _unmount(path: str) -> None:
    for _ in range(100):   # a process that just exited may still hold it for a moment
        if subprocess.run(["umount", path], capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    subprocess.run(["umount", "-l", path], capture_output=True)


@contextlib.contextmanager
def tmpfs(path: str, size: str = "2m", read_only: bool = False):
    """A tmpfs of `size` on `path` (created), unmounted afterwards; the test is skipped with the
    reason when this machine does not let it mount one."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected-fault variant covers the same paths")
    os.makedirs(path, exist_ok=True)
    done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0700" + (",ro" if read_only else ""), "tmpfs", path)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(done.stderr or done.stdout).strip()}); "
                    f"the injected-fault variant covers the same paths")
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def read_only_bind(path: str):
    """`path` (a folder) bind-mounted read-only onto itself."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    done = _mount("--bind", path, path)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({(done.stderr or done.stdout).strip()})")
    try:
        done = _mount("-o", "remount,ro,bind", path)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({(done.stderr or done.stdout).strip()})")
        yield path
    finally:
        _unmount(path)


def fill(folder: str) -> str:
    """Fill the file system of `folder` to the last byte; returns the filler's path."""
    path = os.path.join(folder, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return path


class Disk:
    """The log folder's disk, made full and freed, one of two ways (see the module docstring)."""

    def __init__(self, kind: str, hub, monkeypatch):
        self.kind, self.hub = kind, hub
        self.fault = os.path.join(hub.tmp, "storage-fault")
        self.filler = None
        if kind == "injected":
            monkeypatch.setenv("HUB_TEST_STORAGE_FAULT", self.fault)

    def fill(self) -> None:
        if self.kind == "tmpfs":
            self.filler = fill(self.hub.log_dir)
        else:
            with open(self.fault, "w") as out:
                out.write("full")

    def free(self) -> None:
        if self.kind == "tmpfs":
            if self.filler:
                os.remove(self.filler)
        elif os.path.exists(self.fault):
            os.remove(self.fault)


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request, hub, monkeypatch):
    """A Disk for the hub's log folder; for "tmpfs", the folder is a 2 MB tmpfs."""
    if request.param == "tmpfs":
        with tmpfs(hub.log_dir):
            yield Disk("tmpfs", hub, monkeypatch)
    else:
        yield Disk("injected", hub, monkeypatch)


# -- sampling a running wrapper ----------------------------------------------------------------

class Sampler(threading.Thread):
    """Samples, while a process runs, its resident memory and the journal's bytes on disk
    (hub.journal.disk_usage), with `extra()` alongside each disk sample."""

    def __init__(self, pid: int, log_dir: str, extra=lambda: None, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.log_dir, self.extra, self.every = pid, log_dir, extra, every
        self.rss_peak = 0
        self.samples = []       # (seconds since start, disk_usage, extra())
        self.stop = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmRSS:"):
                            self.rss_peak = max(self.rss_peak, int(line.split()[1]) * 1024)
            except OSError:
                pass
            extra = self.extra()     # first: what OneVizion had, then the disk (never the other way round)
            self.samples.append((time.monotonic() - self.started_at, disk_usage(self.log_dir), extra))
            self.stop.wait(self.every)

    def finish(self) -> "Sampler":
        self.stop.set()
        self.join(10)
        return self


def run_sampled(hub, *args: str, extra=lambda: None, timeout: float = 300):
    """IntegrationWrapper.py as a real process, sampled while it runs: (exit code, stdout,
    stderr, Sampler, seconds)."""
    started = time.monotonic()
    process = hub.spawn("IntegrationWrapper.py", *args)
    sampler = Sampler(process.pid, hub.log_dir, extra)
    sampler.start()
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
        sampler.finish()
    return process.returncode, out, err, sampler, time.monotonic() - started


def delivered_bytes(sandbox):
    """Bytes of Log Description (plus a newline each) the sandbox holds: what was delivered."""
    store = sandbox.store
    table = store.get_type("IntegrationLog").table
    with store.lock:
        return store.db.execute(f'SELECT coalesce(sum(length("IL_DESCRIPTION") + 1), 0) FROM {table}').fetchone()[0]


# == 1. A full disk at start: a condition, not damage ===========================================

def journal_owing_a_run(hub, name="Outage"):
    """A wrapper run while OneVizion is down: its 500 lines and final status wait in the journal."""
    key = hub.add_integration(name)
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": name,
        "ExecutablePath": fixture_command("takes_onevizion_down.py", hub.sandbox.url, "600", "500", "0", "3")}),
        "--drain-seconds", "0.5")
    assert done.returncode == 75, done.stderr
    assert only_run(hub, key)["IR_STATUS"] == "Running"
    return key


def test_a_healthy_journal_on_a_full_disk_is_kept_and_replayed_once_space_is_freed(hub, disk):
    key = journal_owing_a_run(hub)
    hub.sandbox.clear_faults()
    disk.fill()
    try:
        full = hub.script("IntegrationWrapper.py", "--replay")
        status = hub.script("IntegrationWrapper.py", "--status")
    finally:
        disk.free()
    # Not "0 remain", not set aside: the journal is there, it cannot be read now.
    assert full.returncode == 75, full.stdout + full.stderr
    assert "the journal cannot be read now (the disk is full)" in full.stdout
    assert "what it holds stays in it" in full.stdout
    assert status.returncode == 75 and "the journal cannot be read now: the disk is full" in status.stdout
    for done in (full, status):
        no_noise(done.stderr)
        assert done.stderr.count("the disk is full") <= 1, done.stderr
    assert set_aside(hub.log_dir) == []
    db = sqlite3.connect(os.path.join(hub.log_dir, "journal.sqlite3"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    assert only_run(hub, key)["IR_STATUS"] == "Running"

    replay = hub.script("IntegrationWrapper.py", "--replay")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert re.search(r"delivered \d+ records and 1 final statuses; 0 records and 0 statuses remain", replay.stdout)
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed with Warnings" and run["IR_FINISH"]
    assert output_lines(hub, run["TRACKOR_KEY"]) == [f"line {n:06d}" for n in range(1, 501)]
    keys = [r["TRACKOR_KEY"] for r in hub.logs(run["TRACKOR_KEY"])]
    assert len(keys) == len(set(keys))
    assert hub.logs(run["TRACKOR_KEY"])[-1]["IL_MESSAGE"] == "Exit code 3"
    assert set_aside(hub.log_dir) == []


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


def _garble(path):
    with open(path, "r+b") as handle:
        handle.seek(4096)   # page 2 onwards: the tables' pages, not the header
        handle.write(bytes((i * 131 + 7) % 256 for i in range(3 * 4096)))


@pytest.mark.parametrize("damage", [_truncate, _garble], ids=["truncated", "garbled"])
def test_only_a_journal_that_fails_the_integrity_check_is_set_aside(hub, damage):
    journal_owing_a_run(hub)
    hub.sandbox.clear_faults()
    path = os.path.join(hub.log_dir, "journal.sqlite3")
    assert not os.path.exists(path + "-wal")      # closed cleanly: everything is in the file
    damage(path)
    key = hub.add_integration("After")
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": "After", "ExecutablePath": fixture_command("says.py", "out:fine")}))
    assert done.returncode == 0, done.stderr
    no_noise(done.stderr)
    [aside] = set_aside(hub.log_dir)
    assert "the journal was damaged and was moved aside to" in done.stderr
    assert f"{aside}" in done.stderr
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    assert [r["IL_MESSAGE"] for r in hub.logs(run["TRACKOR_KEY"])] == ["fine"]
    db = sqlite3.connect(path)    # the new journal: healthy, and empty once the run left it
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    finally:
        db.close()


# == 2. The disk fills while a flood runs ========================================================

FLOOD_LINES = 200_000


def test_a_disk_that_fills_during_a_flood_loses_nothing_and_says_so_once(hub, disk):
    """A 200,000-line flood (20 MB) into a log folder whose disk is (or becomes) full: every line
    reaches OneVizion in order, stderr says it once, and the run ends with a Warning record
    saying what happened and for how long."""
    key = hub.add_integration("Flood")
    # On the tmpfs the spool fills the disk itself, and it stays full until the run leaves
    # the journal; the child goes on printing a moment after its flood.
    flood = fixture_command("flood_fault.py", str(FLOOD_LINES), "--after", "5")
    if disk.kind == "injected":
        # The child makes the disk full as it starts; the test frees it 2 s later, and the child
        # prints a few more lines once it is free (so that the spool writes to disk again).
        flood = fixture_command("flood_fault.py", str(FLOOD_LINES), "--fault", disk.fault,
                                "--until-gone", disk.fault, "--after", "5")

        def free_later():
            wait_for(lambda: os.path.exists(disk.fault), what="the child's fault")
            time.sleep(2.0)
            disk.free()
        threading.Thread(target=free_later, daemon=True).start()
    code, _, err, sampler, seconds = run_sampled(hub, "-i", hub.integrations_file(
        {"IntegrationName": "Flood", "ExecutablePath": flood}), "--drain-seconds", "30")
    run = only_run(hub, key)
    lines = output_lines(hub, run["TRACKOR_KEY"])
    print(f"\n[{disk.kind}] flood of {FLOOD_LINES} lines, disk full: exit {code} after {seconds:.1f} s, "
          f"peak RSS {sampler.rss_peak / MB:.0f} MB, stderr {err!r}")
    assert code == 0, err
    assert run["IR_STATUS"] == "Executed without Warnings"
    expected = flooded(FLOOD_LINES) + [f"after {k}" for k in range(1, 6)]
    assert len(lines) == len(expected) and lines == expected
    no_noise(err)
    assert err.count("warning: the disk is full") == 1, err
    assert len(err.strip().splitlines()) == 1, err
    warning = storage_warning(hub, run["TRACKOR_KEY"])
    print(f"[{disk.kind}] Warning record: {warning}")
    found = re.search(r"the disk is full from \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d for (\d+) s", warning)
    assert found, warning
    if disk.kind == "injected":
        # Full for the 2 s the test kept it so (give or take the one-second retry).
        assert 1 <= int(found.group(1)) <= 5 and "(still)" not in warning, warning
    assert "Output waited in memory and was delivered from there" in warning
    assert (hub.journal_rows("runs"), hub.journal_rows("records")) == (0, 0)
    if disk.kind == "injected":
        assert os.listdir(os.path.join(hub.log_dir, "spool")) == []


def test_a_full_disk_and_onevizion_down_hold_the_child_back_within_bounded_memory(hub, disk, monkeypatch):
    """OneVizion down for the first 4 s of a 1,000,000-line flood (100 MB) while the disk is full,
    memory for output limited to 4 MB (hub.spool's HUB_TEST_MEMORY_LIMIT): the output cannot go
    anywhere, so the child is held back (never a gap), and the wrapper's memory stays far below
    the output's size; then every line arrives, in order."""
    monkeypatch.setenv("HUB_TEST_MEMORY_LIMIT", str(4 * MB))
    lines = 1_000_000
    key = hub.add_integration("Held")
    down = fixture_command("takes_onevizion_down.py", hub.sandbox.url, "4", "0")
    flood = fixture_command("flood_fault.py", str(lines), "--after", "5")
    if disk.kind == "injected":
        disk.fill()       # full from the start: the journal opens in memory only
    code, _, err, sampler, seconds = run_sampled(hub, "-i", hub.integrations_file(
        {"IntegrationName": "Held", "Shell": True, "ExecutablePath": f"{down} && {flood}"}), "--drain-seconds", "30")
    disk.free()
    run = only_run(hub, key)
    warning = storage_warning(hub, run["TRACKOR_KEY"])
    print(f"\n[{disk.kind}] {lines} lines, OneVizion down 4 s, disk full, 4 MB for output: exit {code} after "
          f"{seconds:.1f} s, peak RSS {sampler.rss_peak / MB:.0f} MB; {warning}")
    assert code == 0, err
    no_noise(err)
    assert output_lines(hub, run["TRACKOR_KEY"]) == flooded(lines) + [f"after {k}" for k in range(1, 6)]
    held = re.search(r"the child was held back for ([\d.]+) s while that memory was full", warning)
    assert held and float(held.group(1)) >= 1.0, warning
    # 100 MB printed; what the wrapper held at any moment stayed a fraction of it.
    assert sampler.rss_peak < 100 * MB, sampler.rss_peak


def test_output_only_the_wrapper_holds_keeps_it_from_exiting_until_onevizion_takes_it(hub, disk):
    """The disk full for the whole run and OneVizion down past the child's end and the drain:
    the output lives only in the wrapper's memory, so it waits (and says so) instead of exiting
    and losing it; once OneVizion is back every line arrives."""
    key = hub.add_integration("Kept")
    down = fixture_command("takes_onevizion_down.py", hub.sandbox.url, "6", "0")
    if disk.kind == "injected":
        disk.fill()
    started = time.monotonic()
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": "Kept", "Shell": True,
        "ExecutablePath": f"{down} && {fixture_command('flood_fault.py', str(FLOOD_LINES))}"}), "--drain-seconds", "1")
    seconds = time.monotonic() - started
    disk.free()
    print(f"\n[{disk.kind}] disk full, OneVizion down 6 s, drain 1 s: exit {done.returncode} after {seconds:.1f} s; "
          f"{done.stderr!r}")
    assert done.returncode == 0, done.stderr
    no_noise(done.stderr)
    assert "the output still owed cannot be kept in the journal now (the disk is full); the wrapper waits" \
        in done.stderr
    assert "could not keep" not in done.stderr
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    assert output_lines(hub, run["TRACKOR_KEY"]) == flooded(FLOOD_LINES)


def test_a_run_delivered_while_the_disk_was_full_is_not_closed_again_by_the_next_invocation(hub, disk):
    """The disk fills (from outside) during a run that OneVizion takes whole: the journal cannot
    record its end, so it still holds the run's row from its start. The wrapper leaves a mark
    (an empty file, which needs no space); the next invocation drops the row instead of closing
    the run again as abandoned, which would overwrite its true status."""
    key = hub.add_integration("Delivered")
    gate = os.path.join(hub.tmp, "gate")
    open(gate, "w").close()
    wrapper = hub.spawn("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": "Delivered",
        "ExecutablePath": fixture_command("flood_fault.py", "100", "--until-gone", gate, "--after", "5")}))
    try:
        wait_for(lambda: final_status_journaled(hub) is False and hub.journal_rows("runs") == 1
                 and delivered_bytes(hub.sandbox) > 0, 30, "the run in the journal and in OneVizion")
        disk.fill()
        os.remove(gate)
        _, err = wrapper.communicate(timeout=60)
    finally:
        wrapper.kill()
        disk.free()
    print(f"\n[{disk.kind}] disk filled mid-run: exit {wrapper.returncode}; {err!r}")
    assert wrapper.returncode == 0, err
    no_noise(err)
    assert "could not keep" not in err
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    # Its row from the start, that the journal kept (on a real tmpfs SQLite can sometimes still
    # delete a row on a full disk: then there is nothing to mark, and nothing to close again).
    assert hub.journal_rows("runs") in (0, 1) if disk.kind == "tmpfs" else hub.journal_rows("runs") == 1
    replay = hub.script("IntegrationWrapper.py", "--replay")
    assert replay.returncode == 0 and "delivered 0 records and 0 final statuses; 0 records and 0 statuses remain" \
        in replay.stdout, replay.stdout + replay.stderr
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    assert not any(r["IL_MESSAGE_TYPE"] == "Error" for r in hub.logs(run["TRACKOR_KEY"]))
    assert output_lines(hub, run["TRACKOR_KEY"]) == [flood_line(i) for i in range(1, 101)] + \
        [f"after {k}" for k in range(1, 6)]
    assert (hub.journal_rows("runs"), hub.journal_rows("records")) == (0, 0)
    assert not any(name.endswith(".delivered") for name in os.listdir(os.path.join(hub.log_dir, "owners")))


# == 3. The journal locked by another process past the busy timeout ============================

BUSY = "0.5"     # the wrapper's busy timeout (HUB_TEST_BUSY_SECONDS), instead of 5 s


class Locker(threading.Thread):
    """Another process's hold on the journal: a second sqlite3 connection inside BEGIN EXCLUSIVE
    for `seconds`, from when `start_when()` holds."""

    def __init__(self, path: str, seconds: float, start_when):
        super().__init__(daemon=True)
        self.path, self.seconds, self.start_when = path, seconds, start_when
        self.held = threading.Event()
        self.released = threading.Event()
        self.error = None

    def run(self) -> None:
        try:
            wait_for(self.start_when, 60, "the moment to lock the journal")
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                db.execute("BEGIN EXCLUSIVE")
                self.held.set()
                time.sleep(self.seconds)
                db.execute("COMMIT")
            finally:
                db.close()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc
        finally:
            self.released.set()


def test_a_journal_locked_past_the_busy_timeout_loses_no_batch_and_the_run_says_so(hub, monkeypatch):
    monkeypatch.setenv("HUB_TEST_BUSY_SECONDS", BUSY)
    key = hub.add_integration("Locked")
    locker = Locker(os.path.join(hub.log_dir, "journal.sqlite3"), 3.0, hub.journal_holds_output)
    locker.start()
    started = time.monotonic()
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": "Locked", "ExecutablePath": fixture_command("paced.py", "1000", "0.005")}))
    locker.join(30)
    print(f"\nlocked 3 s (busy timeout {BUSY} s) during a 1000-line run: exit {done.returncode} after "
          f"{time.monotonic() - started:.1f} s; stderr {done.stderr!r}")
    assert locker.error is None and locker.held.is_set()
    assert done.returncode == 0, done.stderr
    no_noise(done.stderr)
    assert done.stderr.count("another process holds the journal locked") == 1, done.stderr
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    assert output_lines(hub, run["TRACKOR_KEY"]) == [f"line {n:06d}" for n in range(1, 1001)]
    keys = [r["TRACKOR_KEY"] for r in hub.logs(run["TRACKOR_KEY"])]
    assert len(keys) == len(set(keys))
    warning = storage_warning(hub, run["TRACKOR_KEY"])
    print(f"Warning record: {warning}")
    found = re.search(r"another process holds the journal locked from \S+ for (\d+) s", warning)
    assert found and 1 <= int(found.group(1)) <= 6, warning
    replay = hub.script("IntegrationWrapper.py", "--replay")
    assert replay.returncode == 0 and "0 records and 0 statuses remain" in replay.stdout, replay.stdout
    assert (hub.journal_rows("runs"), hub.journal_rows("records")) == (0, 0)


def test_batches_written_while_the_journal_was_locked_and_onevizion_down_are_replayed(hub, monkeypatch):
    """OneVizion down for the whole run and the journal locked while the output comes: the
    batches wait in memory until the lock goes, then the journal holds them; --status and
    --replay say what remains, and the replay delivers each line once."""
    monkeypatch.setenv("HUB_TEST_BUSY_SECONDS", BUSY)
    key = hub.add_integration("Locked down")
    locker = Locker(os.path.join(hub.log_dir, "journal.sqlite3"), 2.0, lambda: os.path.exists(
        os.path.join(hub.log_dir, "journal.sqlite3")) and hub.journal_rows("runs") > 0)
    locker.start()
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": "Locked down", "ExecutablePath": fixture_command(
            "takes_onevizion_down.py", hub.sandbox.url, "600", "300", "4", "0")}), "--drain-seconds", "1")
    locker.join(30)
    assert locker.error is None and locker.held.is_set()
    print(f"\nlocked 2 s with OneVizion down: exit {done.returncode}; stderr {done.stderr!r}")
    assert done.returncode == 75, done.stderr
    no_noise(done.stderr)
    assert "wait in the journal" in done.stderr
    status = hub.script("IntegrationWrapper.py", "--status")
    print(status.stdout)
    assert status.returncode == 75 and "the final status" in status.stdout
    owed = re.search(r"owed: (\d+) records?", status.stdout)
    assert owed, status.stdout
    hub.sandbox.clear_faults()
    replay = hub.script("IntegrationWrapper.py", "--replay")
    print(replay.stdout)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert f"delivered {owed.group(1)} records and 1 final statuses; 0 records and 0 statuses remain" in replay.stdout
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    assert output_lines(hub, run["TRACKOR_KEY"]) == [f"line {n:06d}" for n in range(1, 301)]
    assert "another process holds the journal locked" in storage_warning(hub, run["TRACKOR_KEY"])
    again = hub.script("IntegrationWrapper.py", "--replay")
    assert again.returncode == 0 and "delivered 0 records and 0 final statuses; 0 records and 0 statuses remain" \
        in again.stdout


def test_a_lock_still_held_when_the_wrapper_exits_is_waited_for_and_nothing_is_lost(hub, monkeypatch):
    """The journal still locked when the wrapper is done (OneVizion down, so the records and the
    final status are owed): the wrapper waits for the lock at exit instead of taking its last
    writes with it, so the run's true status reaches OneVizion on --replay."""
    monkeypatch.setenv("HUB_TEST_BUSY_SECONDS", BUSY)
    key = hub.add_integration("Locked at exit")
    locker = Locker(os.path.join(hub.log_dir, "journal.sqlite3"), 6.0, lambda: os.path.exists(
        os.path.join(hub.log_dir, "journal.sqlite3")) and hub.journal_rows("runs") > 0)
    locker.start()
    started = time.monotonic()
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": "Locked at exit", "ExecutablePath": fixture_command(
            "takes_onevizion_down.py", hub.sandbox.url, "600", "300", "1", "0")}), "--drain-seconds", "1")
    seconds = time.monotonic() - started
    locker.join(30)
    print(f"\nlocked 6 s from the run's start, past the wrapper's drain: exit {done.returncode} after {seconds:.1f} s; "
          f"stderr {done.stderr!r}")
    assert locker.error is None and locker.held.is_set()
    assert done.returncode == 75, done.stderr
    assert seconds >= 5.0          # it waited for the lock
    no_noise(done.stderr)
    assert "could not keep" not in done.stderr
    status = hub.script("IntegrationWrapper.py", "--status")
    assert "ended, waiting to be delivered" in status.stdout and "the final status" in status.stdout, status.stdout
    hub.sandbox.clear_faults()
    replay = hub.script("IntegrationWrapper.py", "--replay")
    assert replay.returncode == 0 and "0 records and 0 statuses remain" in replay.stdout, replay.stdout + hub.hub_log()
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    assert output_lines(hub, run["TRACKOR_KEY"]) == [f"line {n:06d}" for n in range(1, 301)]
    assert not any(r["IL_MESSAGE_TYPE"] == "Error" for r in hub.logs(run["TRACKOR_KEY"]))


def test_a_run_row_written_from_memory_never_moves_the_parse_position_back(tmp_path):
    """The race behind a run that no replay could close: the parse wrote its records and
    position, and a run-level write (the final status) taken from memory a moment before carried
    the older position; written after, it sent a later invocation looking for output whose
    spool segments were already gone. A real journal file, no process."""
    import logging
    from hub.journal import Conditions, Journal
    from hub.state import Origin, ParseState, RunRow
    journal = Journal(str(tmp_path), "installation", Conditions(lambda text: None, logging.getLogger("test")))
    try:
        row = RunRow("R-1", "installation", "3", Origin.WRAPPER, {}, started_at=1.0, last_activity=1.0,
                     output_open=True)
        journal.put_run(row)
        journal.put_records("R-1", [], ParseState(next_chunk=5, next_seq=10, ended=True), last_activity=7.0)
        stale = RunRow("R-1", "installation", "3", Origin.WRAPPER, {}, started_at=1.0, last_activity=1.0,
                       output_open=False)   # its parse: the default, chunk 0
        journal.put_run(stale)
        journal.flush()   # writes are queued for the journal's writer thread
        kept = journal.run("R-1")
        assert (kept.parse.next_chunk, kept.parse.next_seq, kept.parse.ended) == (5, 10, True)
        assert kept.last_activity == 7.0 and kept.output_open is False
    finally:
        journal.close()


class HeldWriter:
    """A real journal file whose writer thread is held inside one method (`_write_batch`, or
    `_connect` after it connected) until `go_on` is set: the moment a race needs, made certain.
    `calls` says which thread called the method, with the run keys it wrote."""

    def __init__(self, tmp_path, monkeypatch, method: str = "_write_batch", busy_timeout=None):
        import logging
        from hub.journal import Conditions, Journal
        self.said, self.calls = [], []
        self.inside, self.go_on = threading.Event(), threading.Event()
        self.journal = Journal(str(tmp_path), "installation", Conditions(self.said.append, logging.getLogger("test")),
                               busy_timeout=busy_timeout)
        self.path = os.path.join(str(tmp_path), "journal.sqlite3")
        real = getattr(Journal, method)

        def held(journal, *args, **kwargs):
            name = threading.current_thread().name
            if method == "_write_batch":
                self.calls.append((name, [a[0] for op in args[0] for _, a in op.statements]))
            result = real(journal, *args, **kwargs) if method == "_connect" else None
            if name == "journal-writer" and not self.go_on.is_set():
                self.inside.set()
                self.go_on.wait(30)
            return result if method == "_connect" else real(journal, *args, **kwargs)

        monkeypatch.setattr(Journal, method, held)

    @staticmethod
    def row(key: str):
        from hub.state import Origin, RunRow
        return RunRow(key, "installation", "3", Origin.WRAPPER, {}, started_at=1.0, last_activity=1.0)

    def run_keys_in_file(self):
        db = sqlite3.connect(self.path)
        try:
            return [key for key, in db.execute("SELECT run_key FROM runs ORDER BY run_key")]
        finally:
            db.close()

    def set_aside_by_a_read(self):
        """What _rows does when SQLite says the file is malformed."""
        with self.journal.lock:
            assert self.journal._set_aside(sqlite3.DatabaseError("database disk image is malformed"), writer_idle=False)
            self.journal._open(check=False, writer_idle=False)


def test_closing_waits_for_a_read_in_progress_and_a_later_read_finds_no_connection(tmp_path):
    """A read on another thread (the wrapper's takeover of older runs) holds the reading
    connection when the hub closes the journal: closing waits for it, because SQLite crashes the
    process when a connection is closed under a running statement (a CI run died so, exit 139);
    a read after the close finds no connection and gets nothing. A real journal file."""
    import logging
    from hub.journal import Conditions, Journal
    journal = Journal(str(tmp_path), "installation", Conditions(lambda text: None, logging.getLogger("test")))
    journal.put_run(HeldWriter.row("R-1"))
    journal.flush()
    reading, go_on, seen = threading.Event(), threading.Event(), []

    def reader():
        with journal.lock:   # what _rows holds while SQLite runs the statement
            reading.set()
            go_on.wait(30)
            seen.append(journal.db is not None and journal.db.execute("SELECT count(*) FROM runs").fetchone()[0])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert reading.wait(30)
        closer = threading.Thread(target=journal.close)
        closer.start()
        closer.join(0.3)
        assert closer.is_alive(), "the journal closed its connection under a read in progress"
    finally:
        go_on.set()
    thread.join(30)
    closer.join(30)
    assert seen == [1] and not closer.is_alive()
    assert journal.runs() == [] and journal.db is None


def test_a_writer_still_inside_a_write_at_close_keeps_its_connection_and_writes_once(tmp_path, monkeypatch):
    """The writer thread outlives its join at close, inside a write (a very slow disk): close
    neither writes the same batch again beside it nor closes its connection under it (either
    broke its transaction or crashed the process); the batch is written once, by the writer."""
    import hub.journal as journal_mod
    monkeypatch.setattr(journal_mod, "WRITER_JOIN_SECONDS", 0.1)
    monkeypatch.setattr(journal_mod, "CLOSE_WAIT_SECONDS", 0.3)
    held = HeldWriter(tmp_path, monkeypatch, busy_timeout=0.1)
    journal = held.journal
    journal.put_run(held.row("R-1"))
    try:
        assert held.inside.wait(30)
        journal.close()
        assert journal.db is None and journal._wdb is not None   # the writer's connection is left to it
        assert any("could not keep" in text and "its writer was still writing" in text for text in held.said), held.said
    finally:
        held.go_on.set()
    journal._writer.join(30)
    assert not journal._writer.is_alive() and journal.written == 1
    journal._wdb.close()
    assert held.run_keys_in_file() == ["R-1"]


def test_a_writer_past_its_join_that_ends_during_close_writes_the_rest_alone(tmp_path, monkeypatch):
    """The writer outlives its join inside a slow write, with more queued behind it, and ends
    its write while close waits: it writes the rest itself and ends, and close does not write
    beside it (that wrote the same ops twice at once and closed the connection under it)."""
    import hub.journal as journal_mod
    monkeypatch.setattr(journal_mod, "WRITER_JOIN_SECONDS", 0.1)
    failures = []
    monkeypatch.setattr(threading, "excepthook", lambda hook: failures.append(hook.exc_value))
    held = HeldWriter(tmp_path, monkeypatch, busy_timeout=0.1)
    journal = held.journal
    journal.put_run(held.row("R-1"))
    assert held.inside.wait(30)
    journal.put_run(held.row("R-2"))   # queued behind the slow write
    threading.Timer(0.3, held.go_on.set).start()   # the slow write ends while close waits for the writer
    journal.close()
    assert failures == [] and not any("could not keep" in text for text in held.said), (failures, held.said)
    assert {name for name, _ in held.calls} == {"journal-writer"}, held.calls   # close wrote nothing itself
    assert journal.db is None and journal._wdb is None
    assert held.run_keys_in_file() == ["R-1", "R-2"]


def test_damage_a_read_finds_while_the_writer_writes_leaves_the_writers_connection_to_it(tmp_path, monkeypatch):
    """A read finds the journal damaged while the writer thread is inside a write: the file is
    set aside and a new one started, but the writer's connection is not closed under it (that
    crashes the process); the writer lets it go and writes what it was writing again, to the new
    file. The damage is what _fault hands over."""
    held = HeldWriter(tmp_path, monkeypatch)
    journal = held.journal
    try:
        journal.put_run(held.row("R-1"))
        assert held.inside.wait(30)
        writing_on = journal._wdb
        held.set_aside_by_a_read()
        assert journal._wdb is writing_on and journal.db is not None
        writing_on.execute("SELECT 1")   # still open: the writer's statement may be running on it
    finally:
        held.go_on.set()
    journal.put_run(held.row("R-2"))
    assert journal.flush()
    assert journal._wdb is not writing_on
    assert [r.run_key for r in journal.runs()] == ["R-1", "R-2"]   # the write in flight, again, in the new file
    journal.close()


def test_damage_a_read_finds_while_the_writer_connects_sends_its_writes_to_the_new_file(tmp_path, monkeypatch):
    """A read sets the damaged file aside while the writer is opening its connection to it: the
    writer learns that its connection is to the old file, and its writes go to the new one."""
    held = HeldWriter(tmp_path, monkeypatch, method="_connect")
    journal = held.journal
    try:
        journal.put_run(held.row("R-1"))
        assert held.inside.wait(30)   # the writer holds a connection to the file about to be set aside
        held.set_aside_by_a_read()
    finally:
        held.go_on.set()
    journal.put_run(held.row("R-2"))
    assert journal.flush()
    assert [r.run_key for r in journal.runs()] == ["R-1", "R-2"]
    journal.close()


def test_a_write_after_close_is_not_taken_and_starts_no_writer(tmp_path):
    """A thread that outlives the hub's close (a takeover past its wait) writes: the journal does
    not open its file again behind the close, nor keep the write in memory for reads to wait on."""
    import logging
    from hub.journal import Conditions, Journal
    journal = Journal(str(tmp_path), "installation", Conditions(lambda text: None, logging.getLogger("test")))
    journal.close()
    journal.put_run(HeldWriter.row("R-1"))
    assert journal._writer is None and journal.queue == [] and journal._wdb is None
    started = time.monotonic()
    assert journal.runs() == [] and journal.flush() is True
    assert time.monotonic() - started < 1.0
    assert not os.path.exists(os.path.join(str(tmp_path), "journal.sqlite3-wal"))


def test_a_wrapper_that_exits_early_while_taking_over_an_older_run_leaves_it_whole(hub):
    """The wrapper takes over earlier runs on a thread of its own while it looks its
    integrations up; a lookup refused ends it at once (exit 3). Its close stops the takeover
    and waits for it, instead of closing the journal under it (which crashed the process), and
    the older run is still there, whole, for the next invocation."""
    old = journal_owing_a_run(hub)
    hub.sandbox.clear_faults()
    hub.add_integration("RefusedLookup")
    hub.sandbox.add_rule(method="GET", path=r"^/api/v3/trackor_types/Integration/trackors$",
                         query_contains="RefusedLookup", status=403, body="Forbidden")
    path = hub.integrations_file({"IntegrationName": "RefusedLookup", "ExecutablePath": "true", "Shell": True})
    done = hub.script("IntegrationWrapper.py", "-i", path)   # a process: a crash is its exit code (139 was seen)
    assert done.returncode == 3, done.stderr
    assert "lacks permission (403)" in done.stderr and "Traceback" not in done.stderr, done.stderr
    replay = hub.script("IntegrationWrapper.py", "--replay")
    assert replay.returncode == 0, replay.stdout + replay.stderr + hub.hub_log()
    assert re.search(r"0 records and 0 statuses remain", replay.stdout), replay.stdout
    run = only_run(hub, old)
    assert run["IR_STATUS"] == "Executed with Warnings" and run["IR_FINISH"]   # the child's exit 3
    assert output_lines(hub, run["TRACKOR_KEY"]) == [f"line {n:06d}" for n in range(1, 501)]


# == 4. A log folder that cannot be used: exit 2 before anything runs =========================

WITHOUT_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]   # root, minus "ignore modes"


def run_as(prefix, hub, script, *args):
    argv = [*prefix, sys.executable, os.path.join(REPO_ROOT, script), *args]
    return subprocess.run(argv, cwd=hub.tmp, capture_output=True, text=True, timeout=60)


def _cannot_be_created(hub):
    parent = os.path.join(hub.tmp, "read-only")
    stack = contextlib.ExitStack()
    stack.enter_context(tmpfs(parent, "1m", read_only=True))
    return os.path.join(parent, "log"), [], stack, "cannot be created"


def _is_a_file(hub):
    path = os.path.join(hub.tmp, "log-file")
    with open(path, "w") as out:
        out.write("not a folder\n")
    return path, [], contextlib.ExitStack(), "is not a folder"


def _read_only_mount(hub):
    path = os.path.join(hub.tmp, "read-only-log")
    stack = contextlib.ExitStack()
    stack.enter_context(tmpfs(path, "1m", read_only=True))
    return path, [], stack, "cannot be written"


def _read_only_with_a_journal(hub):
    """A log folder the hub used (its journal, logs, lock folders in it), then made read-only."""
    hub.add_integration("Before")
    assert hub.script("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": "Before", "ExecutablePath": fixture_command("says.py", "out:fine")})).returncode == 0
    hub.sandbox.reset()
    stack = contextlib.ExitStack()
    stack.enter_context(read_only_bind(hub.log_dir))
    return hub.log_dir, [], stack, "cannot be written"


def _another_users_folder(hub):
    """A folder that belongs to another user, for a hub that cannot ignore modes (root without
    CAP_DAC_OVERRIDE, as any other user is)."""
    if subprocess.run([*WITHOUT_DAC, "true"], capture_output=True).returncode != 0:
        pytest.skip("setpriv cannot drop CAP_DAC_OVERRIDE here")
    path = os.path.join(hub.tmp, "other-users-log")
    os.makedirs(path, mode=0o755)
    os.chown(path, 65534, 65534)
    return path, WITHOUT_DAC, contextlib.ExitStack(), "cannot be written"


def _another_users_journal(hub):
    """A log folder of ours whose journal and folders another user's wrapper made (a manual run
    as another user, then cron)."""
    if subprocess.run([*WITHOUT_DAC, "true"], capture_output=True).returncode != 0:
        pytest.skip("setpriv cannot drop CAP_DAC_OVERRIDE here")
    hub.add_integration("Before")
    assert hub.script("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": "Before", "ExecutablePath": fixture_command("says.py", "out:fine")})).returncode == 0
    hub.sandbox.reset()
    for name in os.listdir(hub.log_dir):
        os.chown(os.path.join(hub.log_dir, name), 65534, 65534)
    return hub.log_dir, WITHOUT_DAC, contextlib.ExitStack(), "cannot be written"


@pytest.mark.parametrize("kind", [_cannot_be_created, _is_a_file, _read_only_mount, _read_only_with_a_journal,
                                  _another_users_folder, _another_users_journal],
                         ids=["cannot-be-created", "is-a-file", "read-only", "read-only-with-a-journal",
                              "another-users-folder", "another-users-journal"])
@pytest.mark.parametrize("script", ["IntegrationWrapper.py", "IntegrationWrapperAddingLog.py",
                                    "IntegrationWrapperRunController.py"])
def test_a_log_folder_that_cannot_be_used_is_exit_2_before_any_run(hub, kind, script):
    folder, prefix, stack, says = kind(hub)
    with stack:
        key = hub.add_integration("Anything")
        args = {"IntegrationWrapper.py": ["-i", hub.integrations_file({
                    "IntegrationName": "Anything", "ExecutablePath": fixture_command("says.py", "out:ran")})],
                "IntegrationWrapperAddingLog.py": ["-i", key, "-w", "Info", "-m", "hello"],
                "IntegrationWrapperRunController.py": ["-i", key, "-t", "start"]}[script]
        done = run_as(prefix, hub, script, "-p", hub.passwords, "--log-dir", folder, *args)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    no_noise(done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert folder in line and "--log-dir" in line and says in line, line
    assert hub.runs() == [] and hub.logs() == []


# == 5. File modes: private to the hub's user, whatever the umask ==============================

@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_the_log_folder_and_everything_in_it_are_private_to_the_hubs_user(hub, umask):
    key = hub.add_integration("Modes")
    argv = [sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"), *hub.common("-i", hub.integrations_file({
        "IntegrationName": "Modes", "ExecutablePath": fixture_command("paced.py", "60", "0.05")}))]
    process = subprocess.Popen(argv, cwd=hub.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               umask=umask)
    log_dir = hub.log_dir
    seen = {}
    try:
        def everything_there():
            for root, folders, files in os.walk(log_dir):
                for name in folders + files:
                    path = os.path.join(root, name)
                    try:
                        seen[os.path.relpath(path, log_dir)] = os.lstat(path).st_mode
                    except FileNotFoundError:
                        pass
            names = set(seen)
            return {"journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm", "owners", "locks", "spool",
                    "timezone.json"} <= names and any(n.endswith(".seg") for n in names) and \
                any(n.startswith("owners/") for n in names) and any(n.startswith("locks/") for n in names) and \
                any(n.startswith("hub-") for n in names)
        wait_for(everything_there, 20, "the journal, its WAL, a spool segment, the locks and the log")
    finally:
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    seen[""] = os.stat(log_dir).st_mode
    wrong = {name: oct(mode & 0o777) for name, mode in seen.items()
             if (mode & 0o777) != (0o700 if (mode & 0o170000) == 0o040000 else 0o600)}
    print(f"\numask {umask:03o}: {len(seen)} paths in the log folder: {sorted(seen)}")
    assert wrong == {}, wrong
    assert output_lines(hub, only_run(hub, key)["TRACKOR_KEY"]) == [f"line {n:06d}" for n in range(1, 61)]


# == 6. The journal stays small ===================================================================

@pytest.mark.parametrize("lines,latency_ms", [(200_000, 0), (1_000_000, 0), (200_000, 150), (1_000_000, 40)],
                         ids=["200k", "1M", "200k-slow-onevizion", "1M-slow-onevizion"])
def test_the_journal_gives_delivered_output_back_during_and_after_a_flood(hub, lines, latency_ms):
    """The journal's bytes on disk (hub.journal.disk_usage: SQLite file, WAL, shm, spool), sampled
    20 times a second while a flood is delivered: at every sample at most 1.25 times the output
    still undelivered plus 16 MB; after the run, at most 1 MB (nothing is owed)."""
    hub.sandbox.set_faults(latency_ms=latency_ms)
    key = hub.add_integration("Size")
    times = os.path.join(hub.tmp, "flood-times")
    output = lines * 100                     # 99 characters and a newline per line
    exact_after = []

    def undelivered():
        printed = os.path.exists(times)      # before the child is done, `output` is more than it printed
        return printed, max(0, output - delivered_bytes(hub.sandbox))

    code, _, err, sampler, seconds = run_sampled(hub, "-i", hub.integrations_file({
        "IntegrationName": "Size", "ExecutablePath": fixture_command("flood_fault.py", str(lines), "--times", times)}),
        "--drain-seconds", "60", extra=undelivered)
    after = disk_usage(hub.log_dir)
    assert code == 0, err
    over = []
    peak, peak_owed, margin = 0, 0, None
    for at, usage, (printed, owed) in sampler.samples:
        bound = 1.25 * owed + 16 * MB
        if usage["total"] > peak:
            peak, peak_owed = usage["total"], owed
        if printed:
            exact_after.append(at)
            margin = min(margin if margin is not None else bound, bound - usage["total"])
        if usage["total"] > bound:
            over.append((round(at, 2), usage, owed))
    print(f"\n{lines} lines ({output / MB:.0f} MB) at {latency_ms} ms: wrapper {seconds:.1f} s, {len(sampler.samples)} "
          f"samples ({len(exact_after)} after the child was done); journal peak {peak / MB:.1f} MB with "
          f"{peak_owed / MB:.1f} MB undelivered; closest to the bound: {(margin or 0) / MB:.1f} MB under; "
          f"after the run {after['total'] / 1024:.0f} KiB {after}; wrapper peak RSS {sampler.rss_peak / MB:.0f} MB")
    assert over == [], over[:5]
    assert after["total"] <= 1 * MB, after
    assert exact_after, "no sample after the child was done: the check above proved little"
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    assert output_lines(hub, run["TRACKOR_KEY"]) == flooded(lines)


# == 7. kill -9 in the middle of a flood ==========================================================

def final_status_journaled(hub) -> bool:
    path = os.path.join(hub.log_dir, "journal.sqlite3")
    if not os.path.exists(path):
        return False
    db = sqlite3.connect(path, timeout=10)
    try:
        return db.execute("SELECT count(*) FROM runs WHERE final_fields IS NOT NULL").fetchone()[0] > 0
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


@pytest.mark.parametrize("moment", ["after-the-flood", "during-the-flood"])
def test_a_wrapper_killed_mid_flood_loses_and_duplicates_nothing_after_the_next_invocation(hub, moment):
    """kill -9 of the wrapper while a slow OneVizion still owes most of a flood: the raw output
    is in spool segment files, and the next invocation delivers it, each line once, in order.
    `after-the-flood`: the child had printed all 200,000 lines; `during-the-flood`: it was still
    printing 2,000,000 (it dies of the closed pipe), so what arrives is a prefix with no gap."""
    hub.sandbox.set_faults(latency_ms=100)
    key = hub.add_integration("Killed")
    times = os.path.join(hub.tmp, "flood-times")
    lines = 200_000 if moment == "after-the-flood" else 2_000_000
    wrapper = hub.spawn("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": "Killed",
        "ExecutablePath": fixture_command("flood_fault.py", str(lines), "--times", times)}))
    spool = os.path.join(hub.log_dir, "spool")
    try:
        if moment == "after-the-flood":
            wait_for(lambda: final_status_journaled(hub), 60, "the child's end in the journal")
        else:
            wait_for(lambda: disk_usage(hub.log_dir)["spool"] > 20 * MB, 60, "20 MB of output in the spool")
        wait_for(lambda: delivered_bytes(hub.sandbox) > 0, 30, "the first records in OneVizion")
        before = disk_usage(hub.log_dir)
        delivered = delivered_bytes(hub.sandbox)
        wrapper.kill()
        wrapper.wait(10)
    finally:
        wrapper.kill()
        wrapper.communicate()
    print(f"\n[{moment}] killed with {before['spool'] / MB:.1f} MB in the spool ({len(os.listdir(spool))} runs), "
          f"{before['sqlite'] / MB:.1f} MB in SQLite, {delivered / MB:.1f} MB delivered")
    hub.sandbox.set_faults(latency_ms=0)
    started = time.monotonic()
    replay = hub.script("IntegrationWrapper.py", "--replay", timeout=300)
    print(f"[{moment}] --replay: exit {replay.returncode} in {time.monotonic() - started:.1f} s: "
          f"{replay.stdout.strip()}")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    no_noise(replay.stderr)
    assert "0 records and 0 statuses remain" in replay.stdout
    run = only_run(hub, key)
    records = hub.logs(run["TRACKOR_KEY"])
    keys = [r["TRACKOR_KEY"] for r in records]
    assert len(keys) == len(set(keys))
    got = output_lines(hub, run["TRACKOR_KEY"])
    last = sorted(records, key=lambda r: r["TRACKOR_KEY"])[-1]
    if moment == "after-the-flood":
        # The child's end (exit 0) was in the journal: the run ends as the child earned.
        assert got == flooded(lines)
        assert run["IR_STATUS"] == "Executed without Warnings"
        assert not any(r["IL_MESSAGE_TYPE"] == "Error" for r in records)
    else:
        assert len(got) * 100 >= before["spool"] * 0.9 and got == flooded(len(got)), len(got)
        assert run["IR_STATUS"] == "Executed with Warnings"
        assert last["IL_MESSAGE_TYPE"] == "Error"
        assert f"The wrapper (pid {wrapper.pid}) stopped before the run ended; output after" in last["IL_MESSAGE"]
    assert disk_usage(hub.log_dir)["total"] <= 1 * MB
    again = hub.script("IntegrationWrapper.py", "--replay")
    assert "delivered 0 records and 0 final statuses; 0 records and 0 statuses remain" in again.stdout
