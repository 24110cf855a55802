"""Helpers for tests that run the hub against a sandbox: write Integration.json, add
integrations, call the three scripts in-process or as real processes, read back what
arrived."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from typing import Dict, List, Optional

import requests

import sandbox as sandbox_pkg
from tests.conftest import REPO_ROOT, write_passwords

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures")


def fixture_command(name: str, *args: str) -> str:
    """An ExecutablePath that runs tests/fixtures/<name> with this Python."""
    return " ".join(shlex.quote(a) for a in (sys.executable, os.path.join(FIXTURES, name), *args))


class Hub:
    """One test's hub: a sandbox, a Passwords.json, a log folder, and ways to run the scripts."""

    def __init__(self, sandbox, tmp_path):
        self.sandbox = sandbox
        self.tmp = str(tmp_path)
        self.log_dir = os.path.join(self.tmp, "log")
        self.passwords = write_passwords(tmp_path, sandbox.url)
        self.auth = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)

    # -- OneVizion data -----------------------------------------------------------------

    def add_integration(self, name: str, enabled: int = 1, read_stdout: int = 1, control: str = "tests") -> str:
        """Create an Integration trackor through the API; returns its key."""
        response = requests.post(f"{self.sandbox.url}/api/v3/trackor_types/Integration/trackors", auth=self.auth,
                                 json={"fields": {"INT_NAME": name, "INT_ENABLED": enabled,
                                                  "INT_READ_FROM_STDOUT": read_stdout,
                                                  "INT_CONTROL_PROCESS": control}})
        assert response.status_code == 201, response.text
        return response.json()["TRACKOR_KEY"]

    def integrations_file(self, *entries: Dict, name: str = "Integration.json") -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as out:
            json.dump(list(entries), out)
        return path

    def runs(self, integration_key: Optional[str] = None) -> List[Dict]:
        runs = self.sandbox.trackors("IntegrationRun")
        return [r for r in runs if integration_key is None or r["_parent_key"] == integration_key]

    def logs(self, run_key: Optional[str] = None) -> List[Dict]:
        """Log records (of one run), sorted by Log ID: the order of the output."""
        logs = self.sandbox.trackors("IntegrationLog")
        if run_key is not None:
            logs = [r for r in logs if r["_parent_key"] == run_key]
        return sorted(logs, key=lambda r: r["TRACKOR_KEY"])

    def lines(self, run_key: str, message_type: Optional[str] = None) -> List[str]:
        """Every line delivered for a run, merged records unfolded, in order."""
        out = []
        for record in self.logs(run_key):
            if message_type is None or record["IL_MESSAGE_TYPE"] == message_type:
                out.extend(record["IL_DESCRIPTION"].split("\n"))
        return out

    # -- the scripts --------------------------------------------------------------------

    def common(self, *args: str) -> List[str]:
        return ["-p", self.passwords, "--log-dir", self.log_dir, *args]

    def wrapper(self, integrations: str, *args: str) -> int:
        """IntegrationWrapper.py in-process."""
        from hub.wrapper import main
        return main(self.common("-i", integrations, "--drain-seconds", "10", *args))

    def script(self, script: str, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60,
               with_common: bool = True) -> subprocess.CompletedProcess:
        """One of the three root scripts as a real process."""
        full_env = dict(os.environ)
        full_env.update(env or {})
        argv = [sys.executable, os.path.join(REPO_ROOT, script), *(self.common(*args) if with_common else args)]
        return subprocess.run(argv, cwd=self.tmp, env=full_env, capture_output=True, text=True, timeout=timeout)

    def spawn(self, script: str, *args: str) -> subprocess.Popen:
        """One of the root scripts as a process left running (for signals and kill -9)."""
        argv = [sys.executable, os.path.join(REPO_ROOT, script), *self.common(*args)]
        return subprocess.Popen(argv, cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def journal_rows(self, table: str) -> int:
        """Rows in a table of the journal (to wait until output is journaled)."""
        import sqlite3
        path = os.path.join(self.log_dir, "journal.sqlite3")
        if not os.path.exists(path):
            return 0
        db = sqlite3.connect(path, timeout=10)
        try:
            return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def journal_holds_output(self) -> bool:
        """Whether some of a child's output is in the journal: records formed, or raw output in the
        spool's segment files beside it."""
        spool = os.path.join(self.log_dir, "spool")
        segments = any(name.endswith(".seg") for _, _, names in os.walk(spool) for name in names)
        return segments or self.journal_rows("records") > 0

    def hub_log(self) -> str:
        text = ""
        for name in sorted(os.listdir(self.log_dir)) if os.path.isdir(self.log_dir) else []:
            if name.endswith(".log"):
                with open(os.path.join(self.log_dir, name), encoding="utf-8") as f:
                    text += f.read()
        return text
