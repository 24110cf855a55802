#!/usr/bin/env python3
"""Benchmark of the Integration Hub: one command, one table.

    python3 bench/run.py [--delays 0,20] [--lines 200000] [--baseline-lines 2000] [--quick]

For each sandbox delay (a fresh `python3 -m sandbox --latency-ms D` on a free port, temp db),
runs the real scripts as processes (sys.executable IntegrationWrapper.py ..., fresh --log-dir
each time) and measures:

  flood     bench/flood_child.py prints N ~100-byte numbered lines as fast as it can: its own wall
            time bare (piped into `cat >/dev/null`) vs under the wrapper, --reps runs each,
            interleaved, medians (the machine is shared); the wrapper's
            wall time; child exit -> final run status visible in the sandbox (polled every 50 ms);
            API requests (sandbox stats); every line delivered, in order; the wrapper's peak RSS
            (ru_maxrss of its own process, via bench/rss_launcher.py).
  trickle   bench/trickle_child.py prints a line every 100 ms for 10 s: print -> record created.
  start-up  `true` bare vs the whole wrapper process running an integration whose command is `true`.
  baseline  one synchronous onevizion.Trackor.create() per line (the official client).

Prints the machine and a markdown table with the targets beside the figures, and writes the
table to bench/results/latest.md. Every subprocess is stopped on exit, Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import measure  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0,20", help="sandbox latencies in ms, comma-separated (default 0,20)")
    parser.add_argument("--lines", type=int, default=200_000, help="flood lines (default 200000)")
    parser.add_argument("--baseline-lines", type=int, default=2000, help="baseline creates (default 2000)")
    parser.add_argument("--reps", type=int, default=3, help="wrapped flood runs per delay (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 flood lines, 200 baseline lines, "
                                                             "2 flood and 3 start-up repetitions, a 3 s trickle")
    args = parser.parse_args(argv)
    args.delays = [float(d) for d in args.delays.split(",") if d.strip()]
    args.startup_reps, args.trickle = 5, (100, 0.1)
    if args.quick:
        args.lines, args.baseline_lines = min(args.lines, 20_000), min(args.baseline_lines, 200)
        args.startup_reps, args.trickle, args.reps = 3, (30, 0.1), min(args.reps, 2)
    return args


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return "%s, %d cores, Python %s, %s" % (cpu, os.cpu_count() or 0, platform.python_version(),
                                             datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))


def measure_delay(delay: float, args) -> dict:
    """All four measurements against one fresh sandbox with this latency."""
    workdir = tempfile.mkdtemp(prefix="hub-bench-")
    sandbox = harness.Sandbox(delay, workdir)
    try:
        say = lambda what: print("  delay %g ms: %s ..." % (delay, what), file=sys.stderr, flush=True)
        say("flood of %d lines, %d runs" % (args.lines, args.reps))
        result = {"flood": measure.flood(sandbox, args.lines, args.reps)}
        say("trickle")
        result["trickle"] = measure.trickle(sandbox, *args.trickle)
        say("start-up")
        result["startup"] = measure.startup(sandbox, args.startup_reps)
        say("baseline of %d creates" % args.baseline_lines)
        result["baseline"] = measure.baseline(sandbox, args.baseline_lines)
        return result
    finally:
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ the table

def _num(value, fmt="%.2f", unit=""):
    return "n/a" if value is None else (fmt % value) + unit


def _check(ok) -> str:
    return "" if ok is None else (" ok" if ok else " **MISS**")


def rows(results: dict, delays) -> list:
    """[(section, measure, target, [cell per delay])]; a target check is marked in each cell."""
    def cells(fn):
        return [fn(results[d]) for d in delays]

    def targeted(value, limit, fmt, unit="", at_least=False):
        ok = None if value is None else (value >= limit if at_least else value <= limit)
        return _num(value, fmt, unit) + _check(False if value is None else ok)

    out = []
    f = lambda r: r["flood"]

    def spread(r, key, fmt, unit=""):
        """The median of the flood's wrapped runs, with their range when there are several."""
        values = [run[key] for run in f(r)["runs"] if run[key] is not None]
        if len(values) < 2:
            return _num(f(r)[key], fmt, unit)
        return "%s (%s-%s)" % (_num(statistics.median(values), fmt, unit), fmt % min(values), fmt % max(values))

    ratio = lambda r: f(r)["child_s"] / f(r)["bare_s"]
    out += [
        ("flood", "lines; wrapped runs (figures: median (min-max))", "", cells(lambda r: "%d; %d" % (f(r)["lines"], f(r)["reps"]))),
        ("flood", "child wall time, bare into cat", "", cells(lambda r: "%s (%.3f-%.3f, %d runs)" % (_num(f(r)["bare_s"], "%.3f", " s"), min(f(r)["bare_all"]), max(f(r)["bare_all"]), len(f(r)["bare_all"])))),
        ("flood", "child wall time under the wrapper", "", cells(lambda r: spread(r, "child_s", "%.3f", " s"))),
        ("flood", "child CPU time: bare / under the wrapper", "", cells(lambda r: "%.3f s / %s" % (f(r)["bare_cpu_s"], spread(r, "child_cpu_s", "%.3f", " s")))),
        ("flood", "child under wrapper / bare (medians)", "<= 1.10x", cells(lambda r: targeted(ratio(r), 1.10, "%.2f", "x"))),
        ("flood", "wrapper process wall time", "", cells(lambda r: spread(r, "wrapper_s", "%.2f", " s"))),
        ("flood", "child exit -> final status visible", "<= 5 s", cells(lambda r: targeted(f(r)["final_after_exit_s"], 5, "%.2f", " s") + " " + spread(r, "final_after_exit_s", "%.2f").split(" ", 1)[-1])),
        ("flood", "final status / wrapper exit code", "", cells(lambda r: "%s / %s" % (f(r)["status"], f(r)["exit"]))),
        ("flood", "API requests (total / creates)", "", cells(lambda r: "%d / %d" % (f(r)["requests"], f(r)["creates"]))),
        ("flood", "requests per 1,000 lines", "<= 2", cells(lambda r: targeted(1000 * f(r)["requests"] / f(r)["lines"], 2, "%.2f"))),
        ("flood", "Log records (lines per record)", "", cells(lambda r: "%d (%.0f)" % (f(r)["records"], f(r)["lines"] / max(1, f(r)["records"])))),
        ("flood", "all lines delivered, in order (every run)", "OK", cells(lambda r: ("OK" if f(r)["in_order"] else "FAIL (%s lines)" % [x["delivered_lines"] for x in f(r)["runs"]]) + _check(f(r)["in_order"]))),
        ("flood", "wrapper peak RSS (own process), max of runs", "<= 80 MB", cells(lambda r: targeted(f(r)["peak_rss_max_mb"], 80, "%.1f", " MB") + " " + spread(r, "peak_rss_mb", "%.1f").split(" ", 1)[-1])),
    ]
    t = lambda r: r["trickle"]
    out += [
        ("trickle", "lines / Log records", "1 record per line", cells(lambda r: "%d / %d%s" % (t(r)["lines_seen"], t(r)["records"], _check(t(r)["records"] == t(r)["lines"] == t(r)["lines_seen"])))),
        ("trickle", "print -> record created, median", "", cells(lambda r: _num(t(r)["median_ms"], "%.0f", " ms"))),
        ("trickle", "print -> record created, p95", "<= 1000 ms", cells(lambda r: targeted(t(r)["p95_ms"], 1000, "%.0f", " ms"))),
        ("trickle", "print -> record created, max", "", cells(lambda r: _num(t(r)["max_ms"], "%.0f", " ms"))),
    ]
    s = lambda r: r["startup"]
    out += [
        ("start-up", "`true` bare (median)", "", cells(lambda r: _num(s(r)["bare_s"], "%.3f", " s"))),
        ("start-up", "wrapper running `true` (median)", "", cells(lambda r: _num(s(r)["wrapper_s"], "%.3f", " s"))),
        ("start-up", "difference", "<= 0.5 s", cells(lambda r: targeted(s(r)["extra_s"], 0.5, "%.3f", " s"))),
    ]
    b = lambda r: r["baseline"]
    out += [
        ("baseline", "onevizion.Trackor.create() per line", "", cells(lambda r: "%s (%d lines, %d failed)" % (_num(b(r)["lps"], "%.1f", " lines/s"), b(r)["lines"], b(r)["failures"]))),
        ("baseline", "hub, child start -> final status visible", "", cells(lambda r: _num(f(r)["hub_lps_visible"], "%.0f", " lines/s"))),
        ("baseline", "hub, N / wrapper wall time", "", cells(lambda r: _num(f(r)["hub_lps_wrapper"], "%.0f", " lines/s"))),
        ("baseline", "hub (to final status visible) / baseline", ">= 100x", cells(lambda r: targeted(f(r)["hub_lps_visible"] / b(r)["lps"] if f(r)["hub_lps_visible"] else None, 100, "%.0f", "x", at_least=True))),
    ]
    return out


def table(results: dict, delays, header: str) -> str:
    head = ["section", "measure", "target"] + ["sandbox %g ms" % d for d in delays]
    lines = [header, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for section, name, target, values in rows(results, delays):
        lines.append("| " + " | ".join([section, name, target] + values) + " |")
    lines += ["", "Targets apply at every delay shown; the brief sets the flood and 100x targets at 20 ms. "
              "\"ok\"/\"MISS\" marks each figure against its target."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM ends the benchmark like Ctrl-C does: through the finally that stops the subprocesses.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    header = "Integration Hub benchmark: %s" % machine()
    print(header, file=sys.stderr)
    results = {}
    try:
        for delay in args.delays:
            results[delay] = measure_delay(delay, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        harness.stop_all()
    text = table(results, args.delays, header)
    print(text)
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "latest.md"), "w") as out:
        out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
