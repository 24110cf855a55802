"""The benchmark's plumbing: a sandbox subprocess, its control API, the config files the
wrapper reads, and one wrapper run with a status poller beside it.

Every process started here is registered in PROCESSES and stopped by stop_all(), which
bench/run.py calls in a finally block (so also on Ctrl-C or a failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
USER, PASSWORD = "hub.admin", "sandbox-password"
FINAL_STATUSES = ("Executed without Warnings", "Executed with Warnings")
PROCESSES: List[subprocess.Popen] = []


def stop_all() -> None:
    """Terminate (then kill) every process this benchmark started that still runs."""
    for proc in PROCESSES:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def popen(argv, **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(argv, **kwargs)
    PROCESSES.append(proc)
    return proc


class Sandbox:
    """`python3 -m sandbox` on a free port with a temp db and a fixed latency."""

    def __init__(self, latency_ms: float, workdir: str):
        self.workdir = workdir
        self.proc = popen([sys.executable, "-m", "sandbox", "--port", "0", "--latency-ms", str(latency_ms),
                           "--db", os.path.join(workdir, "sandbox.db")],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=wrapper_env())
        banner = self.proc.stdout.readline()  # "OneVizion sandbox on http://127.0.0.1:PORT  user ..."
        if not banner.startswith("OneVizion sandbox on "):
            raise RuntimeError("sandbox did not start: %r" % banner)
        self.url = banner.split()[3]
        self.http = requests.Session()
        self.passwords = os.path.join(workdir, "Passwords.json")
        with open(os.open(self.passwords, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            json.dump({"installation": {"URL": self.url, "UserName": USER, "Password": PASSWORD}}, out)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def control(self, method: str, path: str, **kwargs):
        response = self.http.request(method, self.url + "/_sandbox/" + path, timeout=60, **kwargs)
        response.raise_for_status()
        return response.json()

    def trackors(self, trackor_type: str, parent_id: Optional[int] = None) -> List[Dict]:
        params = {"parent_id": parent_id} if parent_id is not None else None
        return self.control("GET", "trackors/" + trackor_type, params=params)

    def create(self, trackor_type: str, fields: Dict, parents=None) -> Dict:
        body = {"fields": fields}
        if parents:
            body["parents"] = parents
        response = self.http.post("%s/api/v3/trackor_types/%s/trackors" % (self.url, trackor_type),
                                  json=body, auth=(USER, PASSWORD), timeout=60)
        response.raise_for_status()
        return response.json()

    def add_integration(self, name: str, command: str, timeout: int = 3600,
                        environment: Optional[Dict[str, str]] = None) -> Dict:
        """A new enabled Integration (stdout read) and the Integration.json that runs `command`."""
        created = self.create("Integration", {"INT_NAME": name, "INT_ENABLED": 1, "INT_READ_FROM_STDOUT": 1})
        path = os.path.join(self.workdir, "Integration-%s.json" % created["TRACKOR_KEY"])
        entry = {"IntegrationName": name, "ExecutablePath": command, "Timeout": timeout}
        if environment:
            entry["Environment"] = environment
        with open(path, "w") as out:
            json.dump([entry], out)
        return {"name": name, "key": created["TRACKOR_KEY"], "json": path}


# The variables that change how a Python child writes or the hub starts: the benchmark sets the
# environment itself, so that a PYTHONUNBUFFERED=1 in the shell it was started from cannot turn
# the block-buffered child into a line-flushing one (that hid a 2.6x slowdown once).
PYTHON_VARIABLES = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONOPTIMIZE", "PYTHONDEVMODE",
                    "PYTHONMALLOC", "PYTHONTRACEMALLOC", "PYTHONWARNINGS", "PYTHONVERBOSE", "PYTHONIOENCODING")
HUB_VARIABLES = ("HUB_LOG_DIR", "HUB_BACKOFF_BASE", "HUB_BACKOFF_CAP", "HUB_DELIVERY_SECONDS", "HUB_CONNECTIONS",
                 "HUB_RUN_ID", "HUB_INTEGRATION_ID", "HUB_INTEGRATION_NAME", "HUB_CONTROL_PROCESS")


def inherited_variables() -> Dict[str, str]:
    """The variables of the benchmark's own environment that it removes (reported with the table)."""
    return {k: v for k, v in os.environ.items() if k in PYTHON_VARIABLES + HUB_VARIABLES}


def wrapper_env() -> Dict[str, str]:
    """The environment the hub's scripts run with: the benchmark's own, without those variables."""
    return {k: v for k, v in os.environ.items() if k not in PYTHON_VARIABLES + HUB_VARIABLES}


def child_env(flushing: bool) -> Dict[str, str]:
    env = wrapper_env()
    if flushing:
        env["PYTHONUNBUFFERED"] = "1"
    return env


def folder_bytes(folder: str) -> int:
    """Bytes on disk of every file under a folder (the hub's log folder: journal, WAL, spool)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def journal_bytes(log_dir: str) -> int:
    """The journal's size on disk: the SQLite file, its WAL, and the spool's segment files."""
    total = 0
    for name in ("journal.sqlite3", "journal.sqlite3-wal"):
        try:
            total += os.path.getsize(os.path.join(log_dir, name))
        except OSError:
            pass
    return total + folder_bytes(os.path.join(log_dir, "spool"))


@dataclass
class WrapperRun:
    """What one IntegrationWrapper.py invocation did, as seen from outside."""
    exit_code: int
    started: float                 # epoch, just before the wrapper process was started
    wall: float                    # seconds, whole wrapper process
    final_seen: Optional[float]    # epoch, first poll that saw the run's final status
    run: Optional[Dict]            # the IntegrationRun trackor (sandbox dump)
    requests: Dict = field(default_factory=dict)
    peak_rss_kib: Optional[int] = None
    cpu_s: Optional[float] = None  # the wrapper process's own CPU (user + system), not its children's
    journal_peak: int = 0          # bytes, sampled every 50 ms while it ran
    journal_after: int = 0         # bytes, when it had exited


def _poll_final(sandbox: Sandbox, integration_key: str, known: set, stop: threading.Event, out: dict) -> None:
    poller = requests.Session()
    while not stop.is_set():
        try:
            runs = poller.get(sandbox.url + "/_sandbox/trackors/IntegrationRun", timeout=30).json()
        except requests.RequestException:
            runs = []
        now = time.time()
        for run in runs:
            if (run["_parent_key"] == integration_key and run["TRACKOR_KEY"] not in known
                    and run.get("IR_STATUS") in FINAL_STATUSES):
                out["seen"] = now
                return
        stop.wait(0.05)


def _sample_journal(log_dir: str, stop: threading.Event, out: dict) -> None:
    while not stop.wait(0.05):
        out["peak"] = max(out.get("peak", 0), journal_bytes(log_dir))


def run_wrapper(sandbox: Sandbox, integration: Dict, measure: bool = False, poll: bool = True,
                drain_seconds: Optional[float] = None, reset_stats: bool = True) -> WrapperRun:
    """Run IntegrationWrapper.py once (fresh --log-dir), as an administrator would: default flags
    unless `drain_seconds` is given. `integration["name"]` None runs every entry of its file."""
    known = {r["TRACKOR_KEY"] for r in sandbox.trackors("IntegrationRun")}
    if reset_stats:
        sandbox.control("DELETE", "stats")
    log_dir = tempfile.mkdtemp(prefix="log-", dir=sandbox.workdir)
    argv = [os.path.join(REPO, "IntegrationWrapper.py"), "-p", sandbox.passwords, "-i", integration["json"],
            "--log-dir", log_dir]
    if integration.get("name"):
        argv += ["--name", integration["name"]]
    if drain_seconds is not None:
        argv += ["--drain-seconds", str(drain_seconds)]
    figures = os.path.join(sandbox.workdir, "wrapper-figures-%d" % time.time_ns())
    if measure:
        argv = [os.path.join(BENCH, "rss_launcher.py"), figures] + argv
    stop, seen, sizes = threading.Event(), {}, {}
    threads = []
    if poll and integration.get("key"):
        threads.append(threading.Thread(target=_poll_final, args=(sandbox, integration["key"], known, stop, seen),
                                        daemon=True))
    if measure:
        threads.append(threading.Thread(target=_sample_journal, args=(log_dir, stop, sizes), daemon=True))
    started = time.time()
    proc = popen([sys.executable] + argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.PIPE, env=wrapper_env())
    for thread in threads:
        thread.start()
    _, stderr = proc.communicate()
    wall = time.time() - started
    if poll and threads:
        threads[0].join(30)  # the status should be there once the wrapper is done; allow a last look
    stop.set()
    for thread in threads:
        thread.join(5)
    requests_sent = sandbox.control("GET", "stats")
    runs = [r for r in sandbox.trackors("IntegrationRun")
            if r["_parent_key"] == integration.get("key") and r["TRACKOR_KEY"] not in known]
    if proc.returncode not in (0, 1) or (integration.get("key") and len(runs) != 1):
        sys.stderr.write("warning: wrapper exit %s, %d new runs; stderr: %s\n"
                         % (proc.returncode, len(runs), stderr.decode(errors="replace")[-2000:]))
    rss = cpu = None
    if measure and os.path.exists(figures):
        with open(figures) as f:
            rss_text, cpu_text = f.read().split()
            rss, cpu = int(rss_text), float(cpu_text)
    return WrapperRun(proc.returncode, started, wall, seen.get("seen"), runs[0] if runs else None,
                      requests_sent, rss, cpu, sizes.get("peak", 0), journal_bytes(log_dir))


def timed(argv, **kwargs) -> float:
    """Wall time of one subprocess, seconds."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, **kwargs)
    return time.perf_counter() - started
