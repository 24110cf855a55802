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
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
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

    def add_integration(self, name: str, command: str, timeout: int = 3600) -> Dict:
        """A new enabled Integration (stdout read) and the Integration.json that runs `command`."""
        created = self.create("Integration", {"INT_NAME": name, "INT_ENABLED": 1, "INT_READ_FROM_STDOUT": 1})
        path = os.path.join(self.workdir, "Integration-%s.json" % created["TRACKOR_KEY"])
        with open(path, "w") as out:
            json.dump([{"IntegrationName": name, "ExecutablePath": command, "Timeout": timeout}], out)
        return {"name": name, "key": created["TRACKOR_KEY"], "json": path}


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


def run_wrapper(sandbox: Sandbox, integration: Dict, measure_rss: bool = False, poll: bool = True,
                drain_seconds: float = 600) -> WrapperRun:
    """Run IntegrationWrapper.py once on one integration (fresh --log-dir), as an administrator would."""
    known = {r["TRACKOR_KEY"] for r in sandbox.trackors("IntegrationRun")}
    sandbox.control("DELETE", "stats")
    log_dir = tempfile.mkdtemp(prefix="log-", dir=sandbox.workdir)
    argv = [os.path.join(REPO, "IntegrationWrapper.py"), "-p", sandbox.passwords, "-i", integration["json"],
            "--name", integration["name"], "--log-dir", log_dir, "--drain-seconds", str(drain_seconds)]
    rss_file = os.path.join(log_dir, "peak-rss")
    if measure_rss:
        argv = [os.path.join(BENCH, "rss_launcher.py"), rss_file] + argv
    stop, seen = threading.Event(), {}
    poller = threading.Thread(target=_poll_final, args=(sandbox, integration["key"], known, stop, seen), daemon=True)
    started = time.time()
    proc = popen([sys.executable] + argv, cwd=REPO, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if poll:
        poller.start()
    _, stderr = proc.communicate()
    wall = time.time() - started
    if poll:
        poller.join(30)  # the status should be there once the wrapper is done; allow a last look
    stop.set()
    requests_sent = sandbox.control("GET", "stats")
    runs = [r for r in sandbox.trackors("IntegrationRun")
            if r["_parent_key"] == integration["key"] and r["TRACKOR_KEY"] not in known]
    if proc.returncode != 0 or len(runs) != 1:
        sys.stderr.write("warning: wrapper exit %s, %d new runs; stderr: %s\n"
                         % (proc.returncode, len(runs), stderr.decode(errors="replace")[-2000:]))
    rss = None
    if measure_rss and os.path.exists(rss_file):
        with open(rss_file) as f:
            rss = int(f.read())
    return WrapperRun(proc.returncode, started, wall, seen.get("seen"), runs[0] if runs else None,
                      requests_sent, rss)


def timed(argv, **kwargs) -> float:
    """Wall time of one subprocess, seconds."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, **kwargs)
    return time.perf_counter() - started
