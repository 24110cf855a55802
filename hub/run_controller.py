"""IntegrationWrapperRunController.py: open a run ("Running") or close it ("Executed
with/without Warnings") from outside the wrapper (SPEC §7). Both go through the journal and
the delivery engine like everything else: what OneVizion does not confirm in time waits in
the journal (exit 75); what it refuses is kept as refused (exit 6)."""

from __future__ import annotations

import time
from typing import Optional, Sequence

from hub import cli, context, lookups
from hub import vocabulary as V
from hub.adding_log import backlog, delivery_seconds
from hub.answers import Kind
from hub.delivery import FOUND_CLOSED, ONLY_IF_RUNNING
from hub.errors import DisabledError, NotFoundError, UnreachableError
from hub.run import checkbox, new_run_key
from hub.schema import field_value
from hub.state import ItemState, Origin, RunProgress, RunRow, Step, verdict

SCRIPT = "IntegrationWrapperRunController"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = cli.parse(cli.run_controller_parser(), argv)
    args.check_journal = False
    return context.run_script(args, SCRIPT, lambda ctx: control(ctx, args))


def control(ctx: context.Context, args) -> int:
    code = start(ctx, args) if args.action == "start" else stop(ctx, args)
    backlog(ctx)
    return code


def start(ctx: context.Context, args) -> int:
    """Create a Running run, set Last Run, print the run's key alone on stdout."""
    s = ctx.schema
    integration = lookups.integration_by_id(ctx, args.integration_id)
    if not checkbox(field_value(integration, s.integration.enabled)) and not args.force:
        raise DisabledError(f"integration {args.integration_id} is disabled (Enabled unchecked); --force starts a "
                            f"run anyway")
    now = time.time()
    run_key = new_run_key(args.integration_id, now)
    row = RunRow(run_key=run_key, installation=ctx.installation.identity(), integration_key=args.integration_id,
                 origin=Origin.CONTROLLER, settings=ctx.settings(), started_at=now,
                 integration_id=integration["TRACKOR_ID"], owner=ctx.owner.id, last_activity=now,
                 create=Step({s.run.status: s.run.running, s.run.start: ctx.now_text(now)}, ItemState.PENDING),
                 last_run=Step({s.integration.last_run: ctx.now_text(now)}, ItemState.PENDING))
    ctx.journal.put_run(row, wait=True)
    # The run goes ahead either way (it is journaled); the caller only has to learn it did not get the key.
    key_written = ctx.console.hand_over(run_key, f"the run key {run_key}", "the run is opened all the same")
    if not key_written:
        ctx.log.error("run %s: its key could not be written to stdout", run_key)
    code = deliver(ctx, RunProgress(row), what=f"run {run_key}")
    if code == V.EXIT_OK:
        ctx.log.info("run %s started by the RunController", run_key)
    return V.EXIT_WARNINGS if code == V.EXIT_OK and not key_written else code


def stop(ctx: context.Context, args) -> int:
    """Close -r or the latest Running run: Finish = now, status by -e. A run that is no longer
    Running is left alone (exit 4) unless --force."""
    s = ctx.schema
    fields = {s.run.finish: ctx.now_text(), s.run.status: s.run.warnings if args.errors else s.run.ok}
    run_key, remote = which_run(ctx, args)
    local = ctx.journal.run(run_key)
    if remote is not None and remote.status != s.run.running and not args.force:
        raise NotFoundError(f"run {run_key} is not {s.run.running!r} (its status is {remote.status!r}); nothing "
                            f"changed (--force rewrites it)")
    if local is not None and local.final.fields is not None and not args.force:
        raise NotFoundError(f"run {run_key} was already closed ({local.final.fields.get(s.run.status)!r}, waiting "
                            f"in the local journal); nothing changed (--force rewrites it)")
    # Its status could not be read now: the final status goes only if the run is still Running
    # when it does (read again just before), in this invocation or a later one.
    notes = {ONLY_IF_RUNNING: True} if remote is None and not args.force else {}
    if local is not None and not ctx.owner.alive(local.owner):
        # Its create (or more) still waits in the journal: take it over, the final status goes after.
        if ctx.adopt_orphans(keys=[run_key]):
            with ctx.engine.lock:
                run = ctx.engine.run(run_key)
                run.row.final = Step(fields, ItemState.PENDING)
                run.row.notes.update(notes)
            ctx.journal.put_run(run.row)
            return deliver(ctx, run, what=f"the status of run {run_key}", add=False)
    row = RunRow(run_key=run_key, installation=ctx.installation.identity(), integration_key=args.integration_id,
                 origin=Origin.KNOWN, settings=ctx.settings(), started_at=time.time(), owner=ctx.owner.id,
                 last_activity=time.time(), trackor_id=remote.trackor_id if remote else None,
                 final=Step(fields, ItemState.PENDING), notes=notes)
    if local is None:
        ctx.journal.put_run(row)
    code = deliver(ctx, RunProgress(row), what=f"the status of run {run_key}")
    if code == V.EXIT_OK:
        ctx.log.info("run %s stopped by the RunController: %s", run_key, fields[s.run.status])
    return code


def which_run(ctx: context.Context, args):
    """(run key, the run as OneVizion has it or None when it cannot be asked)."""
    if args.run_id:
        try:
            remote = lookups.run_by_key(ctx, args.run_id)
        except lookups.CallFailed as failed:
            if failed.answer.kind in (Kind.TRANSIENT, Kind.SERVER_ERROR):
                return args.run_id, None
            raise ctx.lookup_error(failed) from None
        if remote is None and ctx.journal.run(args.run_id) is None:
            raise NotFoundError(f"no run {args.run_id!r} in OneVizion")
        return args.run_id, remote
    try:
        remote = lookups.latest_running_run(ctx, args.integration_id)
    except lookups.CallFailed as failed:
        if failed.answer.kind not in (Kind.TRANSIENT, Kind.SERVER_ERROR):
            raise ctx.lookup_error(failed) from None
        local = lookups.local_open_run(ctx, args.integration_id)
        if local is None:
            raise UnreachableError(f"{failed.answer.text}; and the local journal has no open run of integration "
                                   f"{args.integration_id} (give -r RunID to close one later)") from None
        return local, None
    if remote is not None:
        return remote.key, remote
    local = lookups.local_open_run(ctx, args.integration_id)
    if local is not None:
        return local, None
    raise lookups.not_running_message(ctx, args.integration_id)


def deliver(ctx: context.Context, run: RunProgress, what: str, add: bool = True) -> int:
    engine = ctx.engine
    if add:
        engine.add(run)
    engine.wait([run.key], delivery_seconds())
    with engine.lock:
        closed = run.row.notes.get(FOUND_CLOSED)
        if closed is not None and run.row.final.refused:
            run.row.final = Step()     # asked of a run that was closed meanwhile: nothing to deliver
    if closed is not None:
        if not run.owed_records() and not run.refused_items() and not run.row.create.owed:
            ctx.journal.discard_run(run.key)
        else:
            ctx.journal.put_run(run.row)
        ctx.journal.flush(force=True)
        raise NotFoundError(f"run {run.key} is not {ctx.schema.run.running!r} (its status is {closed!r}); nothing "
                            f"changed (--force rewrites it)")
    with engine.lock:
        refused = run.refused_items()
        owed = [name for name, step in run.row.statuses() if step.owed]
    result = verdict(True, None, refused, 0, len(owed), credentials_refused=engine.halted is not None,
                     status_names=owed)
    if result.message:
        (ctx.console.error if refused else ctx.console.warning)(f"{what}: {result.message}")
    return result.exit_code
