"""IntegrationWrapper.py: run the integrations listed in Integration.json, each as a run with
live logs (SPEC §5); or `--replay`, `--status`, `--discard` the journal, or `--check` the
installation (SPEC §10).

The entries are looked up together, then run one after the other in file order; while one
entry's records are still being delivered the next one's child already runs (each run's
final status still goes after all of its records). When the last child has ended, the
wrapper keeps delivering as long as OneVizion keeps confirming, and gives up after
--drain-seconds without progress (exit 75: the journal keeps the rest).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Union

from hub import child as childmod
from hub import check, cli, config, context, status
from hub import vocabulary as V
from hub.errors import HubError, NotFoundError, UsageError
from hub.run import Integration, RunOptions, RunReport, SignalState, checkbox, supervise
from hub.schema import field_value
from hub.state import verdict

SCRIPT = "IntegrationWrapper"
M_ARENA_MAX = -8  # glibc mallopt parameter
LOOKUPS_AT_ONCE = 8
EXTRA_REPLAY_SECONDS = 5.0   # after its own runs, how long the wrapper gives older ones without progress
ADOPTION_STOP_SECONDS = 3.0  # at exit, how long the wrapper waits for a takeover of older runs to stop
HOLD_SECONDS = 600.0         # how long output that only this process holds keeps the wrapper from exiting


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = cli.parse(cli.wrapper_parser(), argv)
    fewer_malloc_arenas()
    # The reader threads hand each pipe read on at once; a short switch interval lets them have
    # the interpreter back quickly while the delivery threads work (measured in bench/).
    sys.setswitchinterval(0.001)
    # --check leaves the journal as it is: no integrity check that could set a damaged one aside.
    args.check_journal = not args.check
    return context.run_script(args, SCRIPT, lambda ctx: wrap(ctx, args))


def fewer_malloc_arenas() -> None:
    """glibc gives each thread its own heap and keeps freed memory there; threads that move
    64 KiB bodies would hold 15-20 MB more than the wrapper uses. Two heaps are plenty for
    threads that mostly wait on pipes and the network. (Measured in bench/.)"""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def wrap(ctx: context.Context, args) -> int:
    if args.check:   # read-only: nothing adopted, nothing delivered, nothing written to OneVizion
        return check.run(ctx, args)
    if args.status:
        return status.show(ctx)
    if args.discard:
        return status.discard(ctx, args.discard)
    if args.replay:
        return replay(ctx, args.drain_seconds, args.retry_refused)
    entries = config.load_integrations(args.integrations)
    selected, code = select_names(ctx, entries, args.name, args.integrations)
    signals = SignalState()
    signals.install()
    adoption = threading.Thread(target=_adopt, args=(ctx,), name="replay", daemon=True)
    adoption.start()
    # Closing stops the takeover at its next run (ctx.closing), and waits for it a little, so
    # that an early exit (a lookup refused) does not pull the journal from under it.
    ctx.closers.append(lambda: adoption.join(ADOPTION_STOP_SECONDS))
    try:
        found = look_up(ctx, selected)
        selected = select_control_process(ctx, selected, found, args.control_process)
        options = RunOptions(grace=args.grace, max_upload_bytes=int(args.max_upload_mb * 1_000_000),
                             drain_seconds=args.drain_seconds, allow_overlap=args.allow_overlap)
        reports: List[RunReport] = []
        for entry in selected:
            if signals.received:
                break
            code = max(code, run_entry(ctx, entry, found[entry.name], options, signals, reports))
        keys = [r.run_key for r in reports]
        if keys:
            ctx.engine.wait(keys, args.drain_seconds, interrupt=signals.event)
            hold_until_kept(ctx, keys, signals.event)
        for report in reports:
            code = max(code, finish_entry(ctx, report))
    finally:
        signals.uninstall()
    adoption.join(EXTRA_REPLAY_SECONDS)
    if ctx._engine is not None and not signals.received:
        others = [k for k in ctx.engine.runs if k not in {r.run_key for r in reports}]
        if others:
            ctx.engine.wait(others, min(EXTRA_REPLAY_SECONDS, args.drain_seconds), interrupt=signals.event)
    if signals.received:
        return V.EXIT_SIGNAL_BASE + signals.received
    return code


def hold_until_kept(ctx: context.Context, keys, interrupt: threading.Event) -> None:
    """Output that neither the journal (a full disk, a lock) nor OneVizion has taken lives only
    in this process: rather than exit and lose it, keep delivering and retrying the journal
    until one of them takes it, for at most HOLD_SECONDS (a signal ends the wait at once)."""
    engine, journal = ctx.engine, ctx.journal

    def only_here() -> bool:
        with engine.lock:
            raw = any(engine.run(k).spool is not None and engine.run(k).spool.memory_bytes for k in keys)
        return (raw or journal.holds_owed()) and not engine.done(keys)

    if not only_here():
        return
    why = journal.condition or next((engine.run(k).spool.condition for k in keys if engine.run(k).spool is not None
                                     and engine.run(k).spool.condition), "the disk cannot be written")
    message = (f"the output still owed cannot be kept in the journal now ({why}); the wrapper waits, "
               f"up to {HOLD_SECONDS / 60:.0f} min, until the journal or OneVizion takes it")
    ctx.log.warning(message)
    ctx.console.warning(message)
    deadline = time.monotonic() + HOLD_SECONDS
    while only_here() and not interrupt.is_set() and engine.halted is None and time.monotonic() < deadline:
        journal.flush()
        engine.wait(keys, 1.0, interrupt=interrupt)


def _adopt(ctx: context.Context) -> None:
    try:
        ctx.adopt_orphans()
    except Exception:  # noqa: BLE001 - the wrapper's own runs go on; the log says what failed
        ctx.log.exception("the runs earlier invocations left could not be taken over")


def select_names(ctx, entries: List[config.IntegrationEntry], names: Optional[List[str]], path: str):
    """The entries --name asks for (all when none), in file order; a name the file does not
    have is exit 4 for it (the others still run), and nothing selected is exit 4 alone."""
    if not names:
        return entries, V.EXIT_OK
    known = [e.name for e in entries]
    missing = [n for n in names if n not in known]
    selected = [e for e in entries if e.name in names]
    if missing:
        message = (f"--name {', '.join(repr(n) for n in missing)}: no such IntegrationName in {path} "
                   f"(it has: {', '.join(repr(k) for k in known)})")
        if not selected:
            raise NotFoundError(message)
        ctx.log.error(message)
        ctx.console.error(message)
    return selected, V.EXIT_NOT_FOUND if missing else V.EXIT_OK


def look_up(ctx: context.Context, entries) -> Dict[str, Union[Integration, HubError]]:
    """Every selected entry's Integration, looked up together (a few at once). Credentials
    refused or OneVizion unreachable stops everything before any child starts (exit 3)."""
    s = ctx.schema.integration
    fields = [s.name, s.enabled, s.control_process, s.read_from_stdout]

    def one(entry) -> Union[Integration, HubError]:
        from hub.api import exact
        try:
            rows = ctx.lookup(ctx.api.find, s.trackor_type, {s.name: exact(entry.name)}, fields)
        except HubError as exc:
            if exc.exit_code == V.EXIT_USAGE:
                exc = UsageError(f"{exc.message} (check the 'integration' section of the schema mapping: trackor "
                                 f"type {s.trackor_type}, fields {', '.join(fields)})")
            return exc
        rows = [r for r in rows if field_value(r, s.name) == entry.name]
        if not rows:
            return NotFoundError(f"no Integration named {entry.name!r} in OneVizion ({s.trackor_type}.{s.name})")
        if len(rows) > 1:
            ctx.log.warning("%d Integrations named %r; using %s", len(rows), entry.name, rows[0]["TRACKOR_KEY"])
        row = rows[0]
        return Integration(key=row["TRACKOR_KEY"], trackor_id=row["TRACKOR_ID"], name=entry.name,
                           enabled=checkbox(field_value(row, s.enabled)),
                           control_process=field_value(row, s.control_process) or "",
                           read_stdout=checkbox(field_value(row, s.read_from_stdout)))

    # The first lookup goes alone: credentials refused then stop everything after one 401 (the
    # client sends nothing more with them), not after one per request already in flight.
    first = one(entries[0]) if entries else None
    if isinstance(first, HubError) and first.exit_code == V.EXIT_UNREACHABLE:
        raise first
    with ThreadPoolExecutor(max_workers=min(LOOKUPS_AT_ONCE, max(1, len(entries))) + 2) as pool:
        mapping = [pool.submit(check_mapping, ctx, section) for section in ("run", "log")]
        pool.submit(ctx.timezone_name)   # PrimaryTimezone, asked beside the lookups rather than after
        results = dict(zip((e.name for e in entries[1:]), pool.map(one, entries[1:])))
        problems = [future.result() for future in mapping]
    if entries:
        results = {entries[0].name: first, **results}
    for result in list(results.values()) + problems:
        if isinstance(result, HubError) and result.exit_code == V.EXIT_UNREACHABLE:
            raise result   # no child starts when OneVizion cannot be reached or refuses us
    for problem in problems:
        if problem is not None:
            raise problem  # a run whose records could never be delivered: nothing runs
    return results


def check_mapping(ctx: context.Context, section: str) -> Optional[HubError]:
    """A read of the Run or Log trackor type with every mapped field, matching nothing: a type
    or field this installation lacks is a 404 now, before any child runs, instead of a refused
    create later. (Drop-down values and field types are --check's to tell.)"""
    from hub.api import exact
    part = getattr(ctx.schema, section)
    names = {"run": ("status", "start", "finish", "file"),
             "log": ("date_time", "message_type", "message", "description", "file")}[section]
    fields = [getattr(part, name) for name in names]
    try:
        ctx.lookup(ctx.api.find, part.trackor_type, {"TRACKOR_KEY": exact("hub-mapping-check")}, fields, per_page=1)
    except HubError as exc:
        if exc.exit_code == V.EXIT_USAGE:
            return UsageError(f"{exc.message} (check the '{section}' section of the schema mapping: trackor type "
                              f"{part.trackor_type}, fields {', '.join(fields)}; --check tells what this "
                              f"installation lacks)")
        return exc
    return None


def select_control_process(ctx, entries, found, control_process: Optional[str]):
    if control_process is None:
        return entries
    selected = [e for e in entries if not isinstance(found[e.name], Integration)
                or found[e.name].control_process == control_process]
    if not any(isinstance(found[e.name], Integration) for e in selected):
        present = sorted({f.control_process for f in found.values() if isinstance(f, Integration)})
        raise NotFoundError(f"--control-process {control_process!r}: no integration of the selected entries has "
                            f"that Control Process (theirs: {', '.join(repr(p) for p in present) or 'none'})")
    for entry in entries:
        if entry not in selected:
            ctx.log.info("%s: control process %r is not %r; skipped", entry.name, found[entry.name].control_process,
                         control_process)
    return selected


def run_entry(ctx, entry, found, options: RunOptions, signals: SignalState, reports: List[RunReport]) -> int:
    """One entry; a missing integration or a bad command line is that entry's failure, not the others'."""
    if isinstance(found, HubError):
        ctx.log.error("%s: %s", entry.name, found.message)
        ctx.console.error(f"{entry.name}: {found.message}")
        return found.exit_code
    if not found.enabled:
        ctx.log.info("%s (%s): Enabled is unchecked; skipped", entry.name, found.key)
        ctx.console.info(f"{entry.name}: disabled (Enabled unchecked); skipped")
        return V.EXIT_OK
    cwd = os.path.abspath(entry.working_dir or os.getcwd())
    env = dict(os.environ)
    env.update(entry.environment)
    try:
        argv = childmod.build_argv(entry.executable_path, entry.shell, cwd, env)
    except UsageError as exc:
        ctx.log.error("%s: %s", entry.name, exc.message)
        ctx.console.error(f"{entry.name}: {exc.message}")
        return exc.exit_code
    report = supervise(ctx, entry, found, argv, cwd, env, options, signals)
    if report is None:
        return V.EXIT_OK
    reports.append(report)
    ctx.console.info(f"{entry.name}: run {report.run_key}: the child ended ({report.problem or 'exit code 0'}) "
                     f"after {report.ended - report.started:.1f} s")
    return V.EXIT_OK


def finish_entry(ctx, report: RunReport) -> int:
    """The entry's exit code from what the journal holds for its run now, and its last line."""
    engine = ctx.engine
    with engine.lock:
        run = engine.run(report.run_key)
        refused = run.refused_items()
        owed_records = run.owed_records() + (1 if run.output_pending() else 0)
        owed_statuses = sum(1 for step in (run.row.create, run.row.final) if step.owed)
        delivered, files = run.delivered, run.files_sent
        blocked = run.blocked()
    if blocked:
        refused = [f"{refused[0]} (check the 'run' section of the schema mapping; --check tells what this "
                   f"installation lacks)"] + refused[1:]
    result = verdict(report.ok, report.stopped_by, refused, owed_records, owed_statuses,
                     credentials_refused=engine.halted is not None, blocked=blocked)
    status_text = ctx.schema.run.ok if report.ok else ctx.schema.run.warnings
    ctx.log.info("run %s finished: %s; %s", report.run_key, report.problem or "exit code 0",
                 result.message or "everything delivered")
    how = f"{status_text} ({report.problem or 'exit code 0'}) after {report.ended - report.started:.1f} s"
    if result.message:
        line = f"{report.name}: run {report.run_key}, {how}: {result.message}"
        (ctx.console.error if refused else ctx.console.warning)(line)
    elif not report.ok and not ctx.console.chatty:
        # A run that ended with warnings is worth cron's mail even when everything was delivered
        # (on a terminal the line below says it).
        ctx.console.warning(f"{report.name}: run {report.run_key}, {how}")
    ctx.console.info(f"{report.name}: run {report.run_key}: {how}; {_count(delivered, 'record')} and "
                     f"{_count(files, 'file')} delivered; "
                     + ("nothing owed" if not (owed_records or owed_statuses or refused) else "see above"))
    return result.exit_code


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def replay(ctx: context.Context, idle_seconds: float, retry_refused: bool) -> int:
    """--replay: deliver what the journal owes this installation; say what went and what remains."""
    if ctx.journal.db is None:
        # Not "0 remain": what the journal holds is there, it just cannot be read now.
        print(f"replay: the journal cannot be read now ({ctx.journal.condition}); nothing was delivered and what "
              f"it holds stays in it: --replay again once that clears")
        return V.EXIT_JOURNALED
    adopted = ctx.adopt_orphans(retry_refused=retry_refused)
    engine = ctx._engine
    code = V.EXIT_OK
    delivered = statuses = owed_records = owed_statuses = refused = 0
    if adopted:
        total = _owed_now(engine, adopted)
        waited = threading.Event()
        watcher = threading.Thread(target=_show_progress, args=(ctx, engine, adopted, total, waited), daemon=True)
        watcher.start()
        engine.wait(adopted, idle_seconds)
        waited.set()
        watcher.join(1.0)
        ctx.console.end_progress()
        with engine.lock:
            for key in adopted:
                run = engine.run(key)
                delivered += run.delivered
                statuses += 1 if run.row.final.fields and run.row.final.state.name == "DELIVERED" and \
                    run.final_sent else 0
                run_refused = run.refused_items()
                run_records = run.owed_records() + (1 if run.output_pending() else 0)
                run_statuses = sum(1 for step in (run.row.create, run.row.final) if step.owed)
                owed_records += run_records
                owed_statuses += run_statuses
                refused += len(run_refused)
                code = max(code, verdict(True, None, run_refused, run_records, run_statuses).exit_code)
    # Records still waiting to be told their run are owed (or refused) like any other.
    loose_owed, loose_refused = len(ctx.journal.loose()), len(ctx.journal.loose(refused=True))
    owed_records, refused = owed_records + loose_owed, refused + loose_refused
    if loose_refused:
        code = max(code, V.EXIT_REFUSED)
    elif loose_owed:
        code = max(code, V.EXIT_JOURNALED)
    print(f"replay: delivered {delivered} records and {statuses} final statuses; {owed_records + refused} records "
          f"and {owed_statuses} statuses remain"
          + (f" ({refused} refused by OneVizion: see --status; --replay --retry-refused tries them again)"
             if refused else ""))
    if engine is not None and engine.halted:
        code = max(code, V.EXIT_JOURNALED)
    return code


def _owed_now(engine, keys) -> int:
    with engine.lock:
        return sum(engine.run(k).owed_records() for k in keys) or 1


def _show_progress(ctx, engine, keys, total, waited: threading.Event) -> None:
    while True:
        with engine.lock:
            left = sum(engine.run(k).owed_records() for k in keys)
            finished = all(engine.run(k).complete() for k in keys)
        ctx.console.progress(max(0, total - left), total, "replay", force=finished)
        if finished or waited.wait(0.2):
            return

