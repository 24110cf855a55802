"""The benchmark still runs end to end (a smoke run; its figures are read by people, never asserted here)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_the_benchmark_runs_and_prints_its_table_with_every_line_delivered():
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "run.py"), "--quick", "--delays", "0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout
    for section in ("| flood |", "| journal |", "| steady |", "| many |", "| helper |", "| trickle |", "| start-up |", "| baseline |"):
        assert section in table
    delivered = next(line for line in table.splitlines() if "every line delivered in order" in line)
    assert "OK" in delivered and "MISSING" not in delivered
