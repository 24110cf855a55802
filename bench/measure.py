"""The four measurements (flood, trickle, start-up, baseline), each against one running sandbox.
Each returns a plain dict of figures; bench/run.py turns them into the table."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import statistics
import sys
import time
from datetime import datetime

from harness import BENCH, PASSWORD, USER, Sandbox, run_wrapper, timed
from flood_child import flood_line

PY = shlex.quote(sys.executable)


def _percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def _records(sandbox: Sandbox, run) -> list:
    """The run's Log records in key order (= output order)."""
    return sorted(sandbox.trackors("IntegrationLog", run["TRACKOR_ID"]), key=lambda r: r["TRACKOR_KEY"])


def _read_times(path):
    with open(path) as f:
        start, end, cpu = f.read().split()
    return float(start), float(end), float(cpu)


def _flood_once(sandbox: Sandbox, integration, lines: int, times: str) -> dict:
    """One wrapper run of the flood child, its figures and its delivery checked line by line."""
    run = run_wrapper(sandbox, integration, measure_rss=True)
    child_start, child_end, child_cpu = _read_times(times)
    records = _records(sandbox, run.run) if run.run else []
    delivered = [line for r in records for line in (r.get("IL_DESCRIPTION") or "").split("\n")]
    return {
        "child_s": child_end - child_start, "child_cpu_s": child_cpu, "wrapper_s": run.wall, "exit": run.exit_code,
        "status": run.run.get("IR_STATUS") if run.run else None,
        "final_after_exit_s": run.final_seen - child_end if run.final_seen else None,
        "requests": run.requests.get("total", 0), "creates": run.requests.get("create", 0),
        "records": len(records), "delivered_lines": len(delivered),
        "in_order": delivered == [flood_line(i) for i in range(1, lines + 1)],
        "peak_rss_mb": run.peak_rss_kib / 1024 if run.peak_rss_kib else None,
        # the hub's throughput, two ways: child start -> final status visible, and the whole wrapper
        "hub_lps_visible": lines / (run.final_seen - child_start) if run.final_seen else None,
        "hub_lps_wrapper": lines / run.wall,
    }


def flood(sandbox: Sandbox, lines: int, reps: int = 3) -> dict:
    """N lines as fast as the child can: bare (into cat) vs under the wrapper, `reps` times each,
    interleaved (bare, wrapped, bare, ...) so that both see the same load on a shared machine.
    Returns the median of each figure, plus "runs" (every wrapped run) and "bare_all"."""
    times = os.path.join(sandbox.workdir, "flood-times")
    child = "%s %s %d %s" % (PY, shlex.quote(os.path.join(BENCH, "flood_child.py")), lines, shlex.quote(times))
    integration = sandbox.add_integration("Bench Flood %d" % time.time_ns(), child)

    def bare_once() -> float:
        timed(["sh", "-c", child + " | cat >/dev/null"])
        start, end, cpu = _read_times(times)
        bare_cpu.append(cpu)
        return end - start

    bare, bare_cpu, runs = [], [], []
    bare.append(bare_once())
    for _ in range(reps):
        runs.append(_flood_once(sandbox, integration, lines, times))
        bare.append(bare_once())
    result = {"lines": lines, "reps": reps, "runs": runs, "bare_all": bare, "bare_s": statistics.median(bare),
              "bare_cpu_s": statistics.median(bare_cpu)}
    for name, value in runs[0].items():
        values = [r[name] for r in runs]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        result[name] = statistics.median(values) if numeric else values[0]
    result["in_order"] = all(r["in_order"] for r in runs)
    result["status"] = ", ".join(sorted({str(r["status"]) for r in runs}))
    result["exit"] = ", ".join(sorted({str(r["exit"]) for r in runs}))
    rss = [r["peak_rss_mb"] for r in runs if r["peak_rss_mb"] is not None]
    result["peak_rss_max_mb"] = max(rss) if rss else None
    return result


def trickle(sandbox: Sandbox, count: int = 100, interval: float = 0.1) -> dict:
    """One line every `interval` s: how long from print to the record existing in OneVizion."""
    child = "%s %s %d %s" % (PY, shlex.quote(os.path.join(BENCH, "trickle_child.py")), count, interval)
    integration = sandbox.add_integration("Bench Trickle %d" % time.time_ns(), child)
    run = run_wrapper(sandbox, integration, poll=False)
    records = _records(sandbox, run.run) if run.run else []
    delays = []
    for record in records:
        for line in (record.get("IL_DESCRIPTION") or "").split("\n"):
            if " at " in line:
                delays.append(record["_created_at"] - float(line.rsplit(" at ", 1)[1]))
    ms = [d * 1000 for d in delays]
    return {"lines": count, "records": len(records), "lines_seen": len(delays),
            "median_ms": statistics.median(ms) if ms else None,
            "p95_ms": _percentile(ms, 0.95) if ms else None, "max_ms": max(ms) if ms else None}


def startup(sandbox: Sandbox, reps: int = 5) -> dict:
    """`true` bare vs the whole wrapper process running an integration whose command is `true`."""
    bare = [timed(["true"]) for _ in range(reps)]
    integration = sandbox.add_integration("Bench True %d" % time.time_ns(), "true")
    wrapped = [run_wrapper(sandbox, integration, poll=False).wall for _ in range(reps)]
    return {"bare_s": statistics.median(bare), "wrapper_s": statistics.median(wrapped),
            "wrapper_all": wrapped, "extra_s": statistics.median(wrapped) - statistics.median(bare)}


def baseline(sandbox: Sandbox, lines: int) -> dict:
    """The straightforward way: one synchronous onevizion.Trackor.create() per line."""
    import onevizion
    onevizion.Config["Verbosity"] = 0
    integration = sandbox.add_integration("Bench Baseline %d" % time.time_ns(), "true")
    run_key = "%s-baseline-%d" % (integration["key"], time.time_ns())
    sandbox.create("IntegrationRun", {"TRACKOR_KEY": run_key, "IR_STATUS": "Running",
                                      "IR_START": datetime.now().strftime("%Y-%m-%dT%H:%M:%S")},
                   [{"trackor_type": "Integration", "filter": {"TRACKOR_KEY": integration["key"]}}])
    client = onevizion.Trackor(trackorType="IntegrationLog", URL=sandbox.url, userName=USER, password=PASSWORD)
    failures = 0
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the client prints; keep the table clean
        for i in range(1, lines + 1):
            text = flood_line(i)
            client.create(fields={"TRACKOR_KEY": "%s-%06d" % (run_key, i), "IL_MESSAGE": text,
                                  "IL_DESCRIPTION": text, "IL_MESSAGE_TYPE": "Info",
                                  "IL_DATE_TIME": datetime.now().strftime("%Y-%m-%dT%H:%M:%S")},
                          parents={"IntegrationRun": {"TRACKOR_KEY": run_key}})
            failures += bool(client.errors)
    elapsed = time.perf_counter() - started
    return {"lines": lines, "seconds": elapsed, "lps": lines / elapsed, "failures": failures}
