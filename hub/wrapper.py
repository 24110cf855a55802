"""IntegrationWrapper.py: run the integrations listed in Integration.json, each as a
run with live logs (SPEC §5), or `--replay` what the journal still owes OneVizion."""

from __future__ import annotations

import ctypes
import sys
import time
from typing import List, Optional, Sequence

from hub import cli, config, context
from hub import vocabulary as V
from hub.errors import NotFoundError, UsageError
from hub.run import RunOptions, SignalState, run_integration

SCRIPT = "IntegrationWrapper"
M_ARENA_MAX = -8  # glibc mallopt parameter


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = cli.parse(cli.wrapper_parser(), argv)
    fewer_malloc_arenas()
    return context.run_script(args, SCRIPT, lambda ctx: wrap(ctx, args))


def fewer_malloc_arenas() -> None:
    """glibc gives each thread its own heap and keeps freed memory there; a dozen threads
    that move 64 KiB bodies would hold 15-20 MB more than the wrapper uses. Two heaps are
    plenty for threads that mostly wait on pipes and the network. (Measured in bench/.)"""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def wrap(ctx: context.Context, args) -> int:
    """Run the selected entries one after the other; the highest exit code wins."""
    if args.replay:
        return replay_only(ctx, args.drain_seconds)
    entries = select(config.load_integrations(args.integrations), args.name)
    signals = SignalState()
    signals.install()
    background = context.replay_in_background(ctx, args.drain_seconds)
    options = RunOptions(grace=args.grace, max_upload_bytes=int(args.max_upload_mb * 1_000_000),
                         drain_seconds=args.drain_seconds, allow_overlap=args.allow_overlap,
                         control_process=args.control_process)
    code = V.EXIT_OK
    try:
        for entry in entries:
            if signals.received:
                break
            code = max(code, run_entry(ctx, entry, options, signals))
    finally:
        signals.uninstall()
    background.join(max(0.0, min(args.drain_seconds, 5.0)))
    if signals.received:
        return V.EXIT_SIGNAL_BASE + signals.received
    return code


def select(entries: List[config.IntegrationEntry], names: Optional[List[str]]) -> List[config.IntegrationEntry]:
    """The entries --name asks for (all when none), in file order."""
    if not names:
        return entries
    known = {e.name for e in entries}
    missing = [n for n in names if n not in known]
    if missing:
        raise UsageError(f"--name {missing[0]!r}: no such IntegrationName in the Integration.json file")
    return [e for e in entries if e.name in names]


def run_entry(ctx: context.Context, entry: config.IntegrationEntry, options: RunOptions, signals: SignalState) -> int:
    """One entry; a missing integration or a bad command line is that entry's failure, not the others'."""
    started = time.monotonic()
    try:
        code = run_integration(ctx, entry, options, signals)
    except (NotFoundError, UsageError) as exc:
        ctx.log.error("%s: %s", entry.name, exc.message)
        print(f"error: {entry.name}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    ctx.log.info("%s: exit code %d after %.1f s", entry.name, code, time.monotonic() - started)
    return code


def replay_only(ctx: context.Context, seconds: float) -> int:
    """--replay: deliver the journal, say what went and what remains."""
    result = context.replay(ctx, seconds, retry_rejected=True)
    remaining = result["remaining_records"] + result["remaining_statuses"] + result["remaining_rejected"]
    print(f"replay: delivered {result['records']} records and {result['statuses']} final statuses; "
          f"{result['remaining_records'] + result['remaining_rejected']} records and "
          f"{result['remaining_statuses']} statuses remain"
          + (f" ({result['remaining_rejected']} refused by OneVizion, see the log in {ctx.log_dir})"
             if result["remaining_rejected"] else ""))
    return V.EXIT_OK if not remaining else V.EXIT_JOURNALED
