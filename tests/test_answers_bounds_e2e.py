"""Bounds on every request, throttle-aware concurrency, and the rows that belong to whom
(SPEC §5 "Bounds on every request", "Every answer counts", journal ownership), over real HTTP
with real processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests

import sandbox as sandbox_pkg
from sandbox.server import Handler, start_in_thread
from tests.answer_table import CALLS, assert_no_traceback, main, numbered
from tests.conftest import REPO_ROOT, write_passwords
from tests.hubtest import fixture_command


def wait_for(condition, seconds=15.0, what="condition"):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def child_lines(hub, key):
    [run] = hub.runs(key)
    return hub.lines(run["TRACKOR_KEY"], "Info")


# -- the total deadline ------------------------------------------------------------------------

def test_one_request_to_a_trickling_server_ends_at_its_total_deadline(hub):
    """A byte a second keeps every read alive: only a total deadline ends it."""
    from hub.api import CallFailed, OneVizion
    from hub.config import load_passwords
    installation, _ = load_passwords(hub.passwords)
    hub.sandbox.add_rule(body_size=4000, trickle_bytes_per_s=1, content_type="application/json")
    api = OneVizion(installation, request_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(CallFailed) as failed:
        api.find("Integration", {})
    took = time.monotonic() - started
    api.close()
    assert 1.0 <= took < 1.8
    assert failed.value.answer.kind.value == "transient" and failed.value.answer.throttle
    assert "did not answer in time" in failed.value.answer.text


def test_headers_trickled_a_byte_a_second_are_a_timeout_too(hub):
    from hub.api import CallFailed, OneVizion
    from hub.config import load_passwords
    installation, _ = load_passwords(hub.passwords)
    hub.sandbox.add_rule(body_size=10, trickle_bytes_per_s=2, trickle_headers=True)
    api = OneVizion(installation, request_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(CallFailed):
        api.find("Integration", {})
    assert time.monotonic() - started < 1.8
    api.close()


def test_the_default_lookup_gives_up_well_within_two_minutes():
    """Retries included: LOOKUP_ATTEMPTS total deadlines and the backoffs between them."""
    from hub.api import REQUEST_SECONDS
    from hub.retry import LOOKUP_ATTEMPTS
    backoffs = sum(min(5.0, 0.5 * 2 ** attempt) for attempt in range(LOOKUP_ATTEMPTS - 1))
    assert LOOKUP_ATTEMPTS * REQUEST_SECONDS + backoffs < 120


# -- 1 MB of answer at most ----------------------------------------------------------------------

def peak_memory_mb(argv, cwd, env=None):
    """Run argv in a fresh parent whose only child it is: (exit code, the child's peak RSS in MB,
    VmHWM as getrusage reports it for waited children)."""
    probe = ("import resource, subprocess, sys\n"
             "code = subprocess.run(sys.argv[1:]).returncode\n"
             "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)
    code, peak_kb = done.stdout.split()[-2:]
    return int(code), int(peak_kb) / 1024, done.stderr


@pytest.mark.parametrize("call", ["lookup", "record create"])
def test_a_300_mb_answer_keeps_the_wrappers_memory_low(hub, call):
    key = hub.add_integration("Huge")
    rule = dict(method="GET", path=r"Integration/trackors$", query_contains="INT_NAME") if call == "lookup" \
        else dict(CALLS["record create"], times=1)
    hub.sandbox.add_rule(body_size=300_000_000, content_type="application/json", **rule)
    path = hub.integrations_file({"IntegrationName": "Huge",
                                  "ExecutablePath": fixture_command("says.py", "out:one", "out:two")})
    argv = [sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"), *hub.common("-i", path)]
    code, peak, err = peak_memory_mb(argv, hub.tmp)
    assert peak < 100, f"{peak:.0f} MB"
    assert_no_traceback(err)
    if call == "lookup":
        assert code == 3 and "larger than the hub reads" in err and hub.runs(key) == []
    else:
        assert code == 6 and "larger than the hub reads" in err
        assert len(child_lines(hub, key)) == 1   # the other line; the refused one waits in the journal


# -- parents by quoted exact key ---------------------------------------------------------------

def add_integration_with_key(hub, key, name):
    answer = requests.post(f"{hub.sandbox.url}/api/v3/trackor_types/Integration/trackors", auth=hub.auth,
                           json={"fields": {"TRACKOR_KEY": key, "INT_NAME": name, "INT_ENABLED": 1,
                                            "INT_READ_FROM_STDOUT": 1}})
    assert answer.status_code == 201, answer.text


def test_parents_are_named_by_quoted_exact_key_so_7_never_lands_on_17(hub, capsys):
    # The sandbox, like OneVizion, treats an unquoted parent filter as "contains", oldest match first:
    # an Integration 17 made before 7 would get 7's run.
    add_integration_with_key(hub, "17", "Seventeen")
    add_integration_with_key(hub, "7", "Seven")
    path = hub.integrations_file({"IntegrationName": "Seven",
                                  "ExecutablePath": fixture_command("says.py", "out:for seven")})
    assert hub.wrapper(path) == 0
    assert hub.runs("17") == [] and len(hub.runs("7")) == 1
    assert child_lines(hub, "7") == ["for seven"]
    seventeen = hub.script("IntegrationWrapperRunController.py", "-i", "17", "-t", "start").stdout.strip()
    seven = hub.script("IntegrationWrapperRunController.py", "-i", "7", "-t", "start").stdout.strip()
    assert [r["TRACKOR_KEY"] for r in hub.runs("17")] == [seventeen]
    assert seven in [r["TRACKOR_KEY"] for r in hub.runs("7")]
    done = hub.script("IntegrationWrapperAddingLog.py", "-i", "7", "-w", "Info", "-m", "to seven")
    assert done.returncode == 0, done.stderr
    assert [r["IL_MESSAGE"] for r in hub.logs(seven)] == ["to seven"] and hub.logs(seventeen) == []
    stop = hub.script("IntegrationWrapperRunController.py", "-i", "7", "-t", "stop")
    assert stop.returncode == 0
    assert {r["TRACKOR_KEY"]: r["IR_STATUS"] for r in hub.runs("17")} == {seventeen: "Running"}


# -- generated keys ------------------------------------------------------------------------------

@pytest.mark.parametrize("trackor_type", ["IntegrationRun", "IntegrationLog"])
def test_a_create_answered_with_another_key_is_kept_and_said_once_in_the_log(hub, capsys, trackor_type):
    hub.sandbox.set_schema(autogen_keys=[trackor_type])
    key = hub.add_integration("Generated")
    lines = numbered(12)
    path = hub.integrations_file({"IntegrationName": "Generated",
                                  "ExecutablePath": fixture_command("says.py", *(f"out:{l}" for l in lines))})
    assert hub.wrapper(path) == 0
    [run] = hub.runs(key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    if trackor_type == "IntegrationRun":
        assert run["TRACKOR_KEY"].startswith("IR-")
    got = hub.lines(run["TRACKOR_KEY"], "Info")
    assert sorted(got) == lines
    warnings = [l for l in hub.hub_log().splitlines() if "generates keys for" in l]
    assert len(warnings) == 1 and trackor_type in warnings[0]


# -- throttle-aware concurrency ----------------------------------------------------------------

class InFlight:
    """Counts the record creates the sandbox is serving at once, and when each began."""

    def __init__(self, monkeypatch):
        self.lock = threading.Lock()
        self.now = 0
        self.starts = []           # (monotonic time, requests in flight with this one)
        original = Handler._api

        def counted(handler, path, query, query_string):
            if handler.command != "POST" or not path.endswith("IntegrationLog/trackors"):
                return original(handler, path, query, query_string)
            with self.lock:
                self.now += 1
                self.starts.append((time.monotonic(), self.now))
            try:
                return original(handler, path, query, query_string)
            finally:
                with self.lock:
                    self.now -= 1

        monkeypatch.setattr(Handler, "_api", counted)

    def most(self, since, until):
        with self.lock:
            return max((n for at, n in self.starts if since <= at < until), default=0)

    def began(self, since, until):
        with self.lock:
            return [at for at, _ in self.starts if since <= at < until]


def spawn_paced(hub, name, count, interval):
    key = hub.add_integration(name)
    path = hub.integrations_file({"IntegrationName": name,
                                  "ExecutablePath": fixture_command("paced.py", str(count), str(interval))})
    return key, hub.spawn("IntegrationWrapper.py", "-i", path)


@pytest.mark.parametrize("status", [503, 429])
def test_fewer_requests_are_in_flight_while_overload_lasts_and_everything_still_arrives(hub, monkeypatch, status):
    counter = InFlight(monkeypatch)
    hub.sandbox.set_faults(latency_ms=60)
    key, wrapper = spawn_paced(hub, "Throttled", 3000, 0.002)
    try:
        wait_for(lambda: counter.most(0, time.monotonic()) >= 6, what="requests in parallel")
        calm = counter.most(0, time.monotonic())
        overloaded = time.monotonic()
        hub.sandbox.add_rule(status=status, delay_ms=60, body="Overloaded", **CALLS["record create"])
        time.sleep(4.0)
        late = counter.most(overloaded + 3.0, time.monotonic())
        hub.sandbox.clear_rules()
        _, err = wrapper.communicate(timeout=60)
    finally:
        wrapper.kill()
    assert calm >= 6 and late <= 2, (calm, late)
    assert wrapper.returncode == 0, err
    assert child_lines(hub, key) == numbered(3000)


def test_a_retry_after_is_honoured_no_request_goes_before_it_has_passed(hub, monkeypatch):
    counter = InFlight(monkeypatch)
    key, wrapper = spawn_paced(hub, "Patient", 400, 0.01)
    try:
        wait_for(lambda: len(hub.logs()) >= 5, what="records arriving")
        hub.sandbox.add_rule(times=1, status=429, headers={"Retry-After": "2"}, body="Slow down",
                             **CALLS["record create"])
        wait_for(lambda: hub.sandbox.rules() == [], what="the 429")
        told = time.monotonic()
        time.sleep(2.5)
        _, err = wrapper.communicate(timeout=60)
    finally:
        wrapper.kill()
    # Requests already in flight when the 429 came back may end; none starts during the pause.
    assert counter.began(told + 0.1, told + 1.9) == []
    assert counter.began(told + 1.9, told + 3.0) != []
    assert wrapper.returncode == 0, err
    assert child_lines(hub, key) == numbered(400)


# -- rows belong to an installation ----------------------------------------------------------------

def journal_with_a_run_owed_to(hub, capsys, name="Owed"):
    """A wrapper run that OneVizion could not take (down): its rows stay in the journal."""
    key = hub.add_integration(name)
    path = hub.integrations_file({"IntegrationName": name, "ExecutablePath": fixture_command(
        "takes_onevizion_down.py", hub.sandbox.url, "600", "5")})
    assert hub.wrapper(path, "--drain-seconds", "0.5") == 75
    hub.sandbox.clear_faults()
    capsys.readouterr()
    return key


def test_rows_of_another_installation_are_neither_delivered_nor_shown_only_counted(hub, capsys, tmp_path):
    key = journal_with_a_run_owed_to(hub, capsys)
    other = start_in_thread(db=":memory:", port=0, integrations_path=sandbox_pkg.INTEGRATIONS_EXAMPLE)
    try:
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        other_passwords = write_passwords(other_dir, other.url)
        args = ["-p", other_passwords, "--log-dir", hub.log_dir]
        from hub.wrapper import main as wrapper_main
        assert wrapper_main(args + ["--replay"]) == 0
        assert wrapper_main(args + ["--status"]) == 0
        said = capsys.readouterr().out
        assert "1 run in this journal belongs to other installations" in said and key + "-" not in said
        assert other.stats()["create"] == 0 and other.stats()["update"] == 0
    finally:
        other.stop()
    assert main(hub, capsys, "--replay")[0] == 0
    assert child_lines(hub, key) == numbered(5)


def test_the_same_url_with_another_user_is_another_installation(hub, capsys, tmp_path):
    key = journal_with_a_run_owed_to(hub, capsys)
    token_dir = tmp_path / "token"
    token_dir.mkdir()
    token = write_passwords(token_dir, hub.sandbox.url, UserName=None, Password=None,
                            AccessKey=sandbox_pkg.ACCESS_KEY, SecretKey=sandbox_pkg.SECRET_KEY)
    from hub.wrapper import main as wrapper_main
    hub.sandbox.reset_stats()
    assert wrapper_main(["-p", token, "--log-dir", hub.log_dir, "--replay"]) == 0
    assert (hub.sandbox.stats()["create"], hub.sandbox.stats()["update"]) == (0, 0)
    assert [r["IR_STATUS"] for r in hub.runs(key)] in ([], ["Running"]) and hub.logs() == []
    assert wrapper_main(["-p", token, "--log-dir", hub.log_dir, "--status"]) == 0
    assert "belongs to other installations" in capsys.readouterr().out
    assert main(hub, capsys, "--status")[0] == 75
    assert main(hub, capsys, "--replay")[0] == 0 and child_lines(hub, key) == numbered(5)


# -- a gone wrapper's run is recovered whatever host name wrote it ------------------------------------

def kill_wrapper_mid_run(hub, name):
    key = hub.add_integration(name)
    pidfile = os.path.join(hub.tmp, "child.pid")
    wrapper = hub.spawn("IntegrationWrapper.py", "-i", hub.integrations_file({
        "IntegrationName": name, "ExecutablePath": fixture_command(
            "takes_onevizion_down.py", hub.sandbox.url, "600", "20", "30", "0", pidfile)}))
    try:
        wait_for(lambda: hub.journal_holds_output() and os.path.exists(pidfile), what="output in the journal")
        time.sleep(0.3)
        wrapper.kill()
        wrapper.wait(10)
    finally:
        if os.path.exists(pidfile):
            os.killpg(int(open(pidfile).read()), signal.SIGKILL)
        wrapper.kill()
        wrapper.communicate()
    hub.sandbox.clear_faults()
    return key, wrapper.pid


def set_owner(hub, owner):
    db = sqlite3.connect(os.path.join(hub.log_dir, "journal.sqlite3"), timeout=10)
    with db:
        db.execute("UPDATE runs SET owner=?", (owner,))
    db.close()


def test_a_gone_wrappers_run_written_under_another_host_name_is_recovered(hub, capsys):
    key, pid = kill_wrapper_mid_run(hub, "Moved")
    # The journal came with a volume from a container that had another name.
    set_owner(hub, f"old-container-7f3a-{pid}-a1b2c3")
    code, said = main(hub, capsys, "--replay")
    assert code == 0, said
    [run] = hub.runs(key)
    assert run["IR_STATUS"] == "Executed with Warnings"
    assert child_lines(hub, key) == numbered(20)
    assert f"The wrapper (pid {pid}) stopped before the run ended" in hub.logs(run["TRACKOR_KEY"])[-1]["IL_MESSAGE"]


def test_a_live_wrappers_run_is_left_to_it_whatever_the_host_name(hub, capsys):
    key = hub.add_integration("Alive")
    wrapper = hub.spawn("IntegrationWrapper.py", "--grace", "0.5", "-i", hub.integrations_file({
        "IntegrationName": "Alive", "ExecutablePath": fixture_command("sleeper.py")}))
    try:
        wait_for(lambda: any(r["IL_MESSAGE"] == "ready" for r in hub.logs()), what="the run")
        code, said = main(hub, capsys, "--status")
        assert code == 75 and "being delivered by a running process" in said
        assert main(hub, capsys, "--replay")[0] == 0
        assert hub.runs(key)[0]["IR_STATUS"] == "Running"
    finally:
        wrapper.send_signal(signal.SIGTERM)
        wrapper.communicate(timeout=20)
    assert hub.runs(key)[0]["IR_STATUS"] == "Executed with Warnings"


# -- connection refused: OneVizion stopped in the middle of a run --------------------------------------

def test_onevizion_refusing_connections_mid_run_loses_nothing_and_replay_delivers_once(tmp_path, monkeypatch):
    from tests.hubtest import Hub
    monkeypatch.setenv("HUB_BACKOFF_BASE", "0.02")
    monkeypatch.setenv("HUB_BACKOFF_CAP", "0.2")
    db = str(tmp_path / "sandbox.db")
    first = start_in_thread(db=db, port=0)
    port = first.port
    hub = Hub(first, tmp_path)
    key = hub.add_integration("Refusing")
    wrapper = hub.spawn("IntegrationWrapper.py", "--drain-seconds", "1", "-i", hub.integrations_file({
        "IntegrationName": "Refusing", "ExecutablePath": fixture_command("paced.py", "60", "0.05")}))
    try:
        wait_for(lambda: len(hub.logs()) >= 3, what="the first records")
        first.stop()                              # nothing listens on the port now: connection refused
        _, err = wrapper.communicate(timeout=60)
    finally:
        wrapper.kill()
    assert wrapper.returncode == 75, err
    assert_no_traceback(err)
    second = start_in_thread(db=db, port=port)
    try:
        hub.sandbox = second
        replay = hub.script("IntegrationWrapper.py", "--replay")
        assert replay.returncode == 0, replay.stderr
        [run] = hub.runs(key)
        assert run["IR_STATUS"] == "Executed without Warnings"
        assert hub.lines(run["TRACKOR_KEY"], "Info") == numbered(60)
        keys = [r["TRACKOR_KEY"] for r in hub.logs(run["TRACKOR_KEY"])]
        assert len(keys) == len(set(keys))
    finally:
        second.stop()
