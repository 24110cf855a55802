#!/usr/bin/env python3
"""Benchmark of the Integration Hub: one command, one table, every figure beside its target.

    python3 bench/run.py [--delays 0,20,100,300] [--lines 200000] [--big-lines 1000000] [--reps 11] [--quick]

For each sandbox delay (a fresh `python3 -m sandbox --latency-ms D` on a free port, temp db) it
runs the real scripts as processes, with an environment it sets itself (it removes PYTHONUNBUFFERED,
PYTHONDONTWRITEBYTECODE and the hub's variables from its own, and says which it found), fresh
--log-dir each time, default flags; see bench/measure.py for what each section measures.

Prints the machine, the date and a markdown table (also written to bench/results/latest.md).
Every subprocess is stopped on exit, Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import platform
import shutil
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import measure  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0,20,100,300", help="sandbox latencies in ms (default 0,20,100,300)")
    parser.add_argument("--lines", type=int, default=200_000, help="flood lines (default 200000)")
    parser.add_argument("--big-lines", type=int, default=1_000_000, help="big flood lines (default 1000000)")
    parser.add_argument("--reps", type=int, default=11, help="wrapped runs of each 200k flood (default 11; the "
                                                            "1M floods get 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small floods, short streams, "
                                                             "10 integrations, one repetition")
    args = parser.parse_args(argv)
    args.delays = [float(d) for d in args.delays.split(",") if d.strip()]
    # A child's flood lasts 0.1 to 0.7 s: a single run of it is at the mercy of whatever else the
    # machine does, so it runs several times (bare runs interleaved with wrapped ones) and the ratio
    # is the median over the pairs (bench/measure.py says why).
    args.big_reps, args.steady, args.many, args.helper_reps, args.trickle, args.startup_reps = 5, (2000, 8.0), \
        (50, 100), 9, (100, 0.1), 5
    args.baseline_lines = 1000
    if args.quick:
        args.lines, args.big_lines, args.reps = min(args.lines, 20_000), min(args.big_lines, 50_000), 1
        args.steady, args.many, args.helper_reps, args.trickle, args.startup_reps = (500, 3.0), (10, 20), 3, \
            (20, 0.1), 2
        args.baseline_lines = 100
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
    """Every section against one fresh sandbox with this latency."""
    workdir = tempfile.mkdtemp(prefix="hub-bench-")
    sandbox = harness.Sandbox(delay, workdir)
    say = lambda what: print("  delay %g ms: %s ..." % (delay, what), file=sys.stderr, flush=True)
    try:
        result = {}
        for key, lines, reps, flushing in (("flood", args.lines, args.reps, False),
                                           ("flood_flush", args.lines, args.reps, True),
                                           ("big", args.big_lines, args.big_reps, False),
                                           ("big_flush", args.big_lines, args.big_reps, True)):
            say("%s child, %d lines" % ("line-flushing" if flushing else "block-buffered", lines))
            result[key] = measure.flood(sandbox, lines, reps, flushing)
        say("a steady stream")
        result["steady"] = measure.sustained(sandbox, args.steady[0], args.steady[1], delay)
        say("%d integrations" % args.many[0])
        result["many"] = measure.many(sandbox, *args.many)
        say("IntegrationWrapperAddingLog.py")
        result["helper"] = measure.adding_log(sandbox, args.helper_reps)
        say("trickle")
        result["trickle"] = measure.trickle(sandbox, *args.trickle)
        say("start-up")
        result["startup"] = measure.startup(sandbox, args.startup_reps)
        if delay <= 20:
            say("baseline of %d creates" % args.baseline_lines)
            result["baseline"] = measure.baseline(sandbox, args.baseline_lines)
        return result
    finally:
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ the table

def num(value, fmt="%.2f", unit=""):
    return "n/a" if value is None else (fmt % value) + unit


def judged(value, limit, fmt, unit="", at_least=False):
    """The figure, with ok/over against its target (a missing figure is over)."""
    if limit is None:
        return num(value, fmt, unit)
    ok = value is not None and (value >= limit if at_least else value <= limit)
    return num(value, fmt, unit) + (" ok" if ok else " **over**")


TRICKLE_P95 = {0: 1000, 20: 1000, 100: 112, 300: 309}   # ms: the first version's figures, "no worse"


def rows(results: dict, delays) -> list:
    """[(section, measure, target, [cell per delay])]."""
    def cells(fn):
        return [fn(results[d], d) if results.get(d) else "n/a" for d in delays]

    out = []
    for key, what in (("flood", "block-buffered"), ("flood_flush", "line-flushing"), ("big", "block-buffered"),
                      ("big_flush", "line-flushing")):
        lines = lambda r: r[key]["lines"]
        label = "%s child, %s lines" % (what, "{:,}".format(results[delays[0]][key]["lines"]))
        out.append(("flood", "%s: child wall under the wrapper / bare into cat" % label, "<= 1.10x (median of pairs)",
                    cells(lambda r, d: judged(r[key]["ratio"], 1.10, "%.2f", "x") + " (%d pairs; fastest %s / %s; "
                          "medians %s)" % (len(r[key]["pair_ratios"]), num(r[key]["child_min_s"], "%.3f", " s"),
                                           num(r[key]["bare_min_s"], "%.3f", " s"),
                                           num(r[key]["ratio_median"], "%.2f", "x")))))
        if key.startswith("big"):
            limit = 4.5 if "flush" in key else 3.5
            out.append(("flood", "%s: wrapper CPU per 1M lines" % label, "<= %.1f s" % limit,
                        cells(lambda r, d: judged(r[key]["wrapper_cpu_s"] * 1e6 / lines(r)
                                                  if r[key]["wrapper_cpu_s"] else None, limit, "%.2f", " s"))))
            out.append(("flood", "%s, default flags: every line delivered in order / final status / exit" % label,
                        "OK / final / 0",
                        cells(lambda r, d: "%s / %s / %s%s" % (
                            "OK" if r[key]["in_order"] else "MISSING", r[key]["status"], r[key]["exit"],
                            " ok" if r[key]["in_order"] and r[key]["exit"] == "0" and "Executed" in r[key]["status"]
                            else " **over**"))))
        else:
            out.append(("flood", "%s: every line delivered in order / final status / exit" % label,
                        "OK / final / 0", cells(lambda r, d: "%s / %s / %s" % (
                            "OK" if r[key]["in_order"] else "MISSING", r[key]["status"], r[key]["exit"]))))
        if key == "flood":
            out.append(("flood", "%s: child exit -> final status visible" % label, "<= 5 s (up to 100 ms)",
                        cells(lambda r, d: judged(r[key]["final_after_exit_s"], 5 if d <= 100 else None,
                                                  "%.2f", " s"))))
            out.append(("flood", "%s: requests per 1,000 lines (records)" % label, "<= 2",
                        cells(lambda r, d: judged(1000 * r[key]["requests"] / lines(r), 2, "%.2f")
                              + " (%d)" % r[key]["records"])))
            out.append(("flood", "%s: wrapper peak memory (VmHWM), max of runs" % label, "<= 80 MB",
                        cells(lambda r, d: judged(r[key]["peak_rss_max_mb"], 80, "%.1f", " MB"))))
        if key in ("flood", "big"):
            out.append(("journal", "%s: peak on disk during the run (output: %.0f MB)" % (
                label, results[delays[0]][key]["output_mb"]), "<= 1.25 x output + 16 MB",
                cells(lambda r, d: judged(r[key]["journal_peak_max_mb"], 1.25 * r[key]["output_mb"] + 16,
                                          "%.1f", " MB"))))
            out.append(("journal", "%s: on disk after the run" % label, "<= 1 MB",
                        cells(lambda r, d: judged(r[key]["journal_after_mb"], 1.0, "%.2f", " MB"))))
    out.append(("steady", "a steady stream: connections kept busy (requests / s, connections)",
                ">= 90 % (100 ms)",
                cells(lambda r, d: judged(100 * r["steady"]["share"] if r["steady"]["share"] is not None else None,
                                          90 if d == 100 else None, "%.0f", " %", at_least=True) + (
                    " (%.0f/s, %d)" % (r["steady"]["rate"], r["steady"]["in_flight_max"])
                    if r["steady"]["rate"] is not None else ""))))
    out.append(("many", "%d integrations x %d lines in one Integration.json: wrapper wall time" % (
        results[delays[0]]["many"]["count"], results[delays[0]]["many"]["lines"]), "<= 5 s (up to 100 ms)",
        cells(lambda r, d: judged(r["many"]["wall_s"], 5 if d <= 100 else None, "%.2f", " s")
              + " (%d ok, exit %d)" % (r["many"]["ok_runs"], r["many"]["exit"]))))
    out.append(("helper", "IntegrationWrapperAddingLog.py -r, one call, median", "<= 0.12 s (0 ms)",
                cells(lambda r, d: judged(r["helper"]["median_s"], 0.12 if d == 0 else None, "%.3f", " s"))))
    out.append(("trickle", "a line every 100 ms: lines / Log records", "1 record per line",
                cells(lambda r, d: "%d / %d%s" % (r["trickle"]["lines_seen"], r["trickle"]["records"],
                                                  " ok" if r["trickle"]["records"] == r["trickle"]["lines"] ==
                                                  r["trickle"]["lines_seen"] else " **over**"))))
    out.append(("trickle", "print -> record created, median / p95", "p95 <= 1000 / 112 / 309 ms",
                cells(lambda r, d: "%s / %s" % (num(r["trickle"]["median_ms"], "%.0f", " ms"), judged(
                    r["trickle"]["p95_ms"], TRICKLE_P95.get(int(d), 1000 + d), "%.0f", " ms")))))
    out.append(("start-up", "wrapper running `true` minus `true` (median)", "<= 0.5 s (up to 20 ms)",
                cells(lambda r, d: judged(r["startup"]["extra_s"], 0.5 if d <= 20 else None, "%.3f", " s"))))
    out.append(("baseline", "hub (child start -> final status) / one onevizion.Trackor.create() per line",
                ">= 100x (20 ms)", cells(lambda r, d: _baseline(r, d))))
    return out


def _baseline(r, delay):
    if "baseline" not in r:
        return "-"
    flood = r["flood"]
    runs = [x for x in flood["runs"] if x["final_after_exit_s"] is not None]
    if not runs:
        return "n/a"
    # the hub's throughput: lines / (child wall + child exit -> final status)
    hub = flood["lines"] / (flood["child_s"] + flood["final_after_exit_s"])
    ratio = hub / r["baseline"]["lps"]
    return judged(ratio, 100 if delay == 20 else None, "%.0f", "x", at_least=True) + " (%.0f vs %.1f lines/s)" % (
        hub, r["baseline"]["lps"])


def table(results: dict, delays, header: str) -> str:
    head = ["section", "measure", "target"] + ["sandbox %g ms" % d for d in delays]
    lines = [header, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for section, name, target, values in rows(results, delays):
        lines.append("| " + " | ".join([section, name, target] + values) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM ends the benchmark like Ctrl-C does: through the finally that stops the subprocesses.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    inherited = harness.inherited_variables()
    header = "Integration Hub benchmark: %s\n\nEnvironment: the scripts and children run without %s" % (
        machine(), ", ".join("%s=%s" % kv for kv in sorted(inherited.items())) if inherited
        else "(no PYTHON*/HUB_* variables were set)")
    header += "; the line-flushing child gets PYTHONUNBUFFERED=1 through its Environment."
    if sys.prefix == getattr(sys, "base_prefix", sys.prefix):
        header += ("\n\nNote: not run from a virtual environment; every start-up figure includes this Python's "
                   "site-packages (run it as .venv/bin/python bench/run.py, as the README's setup has it).")
    print(header, file=sys.stderr)
    # As an installed copy has them: compiled modules, so that start-up figures are not compile times.
    for package in ("hub", "sandbox"):
        compileall.compile_dir(os.path.join(harness.REPO, package), quiet=1)
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
    with open(os.path.join(folder, "latest.json"), "w") as out:   # every run's figures, for a closer look
        json.dump({str(d): r for d, r in results.items()}, out, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
