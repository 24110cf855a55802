"""IntegrationWrapperAddingLog.py: add one log record to the running run of an integration
(SPEC §6).

The run is -r if given; else $HUB_RUN_ID when that run belongs to -i; else the integration's
latest Running run (a run whose create still waits in the local journal counts). A run that a
live wrapper on this machine delivers gets the record through the journal: that wrapper sends
it (after the run's create, whatever order things happened in) and this script waits to see it
confirmed. Otherwise this script sends the record itself, first, and then spends at most about
a second on what earlier invocations left. OneVizion unreachable: the record waits in the
journal (exit 75) and the next invocation of any script delivers it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional, Sequence

from hub import cli, context, lookups
from hub import vocabulary as V
from hub.answers import Kind
from hub.errors import NotFoundError, UnreachableError, UsageError
from hub.state import ItemState, Origin, RecordRow, RunProgress, RunRow, verdict

SCRIPT = "IntegrationWrapperAddingLog"
BACKLOG_SECONDS = 1.0


def delivery_seconds() -> float:
    """How long a helper waits for its own item before leaving it to the journal (exit 75)."""
    return float(os.environ.get("HUB_DELIVERY_SECONDS", "5"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = cli.parse(cli.adding_log_parser(), argv)
    args.check_journal = False
    return context.run_script(args, SCRIPT, lambda ctx: add_log(ctx, args))


def add_log(ctx: context.Context, args) -> int:
    now = time.time()
    path = os.path.abspath(args.file) if args.file else None
    if path:
        refusal = check_file(ctx, path)
        if refusal:
            raise UsageError(f"-f {args.file}: {refusal}; nothing was sent")
    fields = record_fields(ctx, args, now)
    suffix = f"X{int(now * 1000):x}{os.urandom(4).hex()}"
    target = target_run(ctx, args)
    if target is None:   # OneVizion unreachable and nothing local: the run that is Running now, later
        try:
            ctx.journal.add_loose(args.integration_id, os.environ.get("HUB_RUN_ID"), suffix, now, json.dumps(fields),
                                  path)
        except Exception as exc:  # noqa: BLE001 - OneVizion away and the journal full: nowhere to keep it
            raise UnreachableError(f"OneVizion cannot be reached and the local journal cannot keep the record now "
                                   f"({exc}); nothing was kept") from None
        ctx.log.warning("record for integration %s kept in the journal: OneVizion cannot be reached to tell its run",
                        args.integration_id)
        ctx.console.warning(f"OneVizion cannot be reached; the record for integration {args.integration_id} waits "
                            f"in the local journal, the next invocation delivers it")
        return V.EXIT_JOURNALED
    run_key, remote = target
    log_key = f"{run_key}-{suffix}"
    fields["TRACKOR_KEY"] = log_key
    record = RecordRow(log_key, run_key, json.dumps(fields), "helper", file_path=path, created_at=now)
    return deliver(ctx, args, record, remote)


def check_file(ctx: context.Context, path: str) -> Optional[str]:
    """Why -f may not be uploaded (the hub's never-list; UploadDirs do not apply to a file a
    person names), or None."""
    from hub import uploads
    policy = uploads.UploadPolicy.build(None, os.getcwd(), ctx.secret_files(), ctx.log_dir,
                                        V.DEFAULT_MAX_UPLOAD_MB * 1_000_000)
    opened = uploads.open_for_upload(path, policy, check_dirs=False)
    if isinstance(opened, uploads.Opened):
        opened.close()
        return None
    return f"not uploaded: {opened.reason}"


def record_fields(ctx: context.Context, args, now: float) -> dict:
    from hub import lines
    log = ctx.schema.log
    description = args.description if args.description is not None else args.message
    return {log.date_time: ctx.now_text(now), log.message_type: log.type_value(args.message_type),
            log.message: lines.cut_message(args.message, log.message_limit),
            log.description: description[:log.description_limit]}


def target_run(ctx: context.Context, args):
    """(run key, the run as OneVizion has it or None), or None when it cannot be told now."""
    integration = args.integration_id
    if args.run_id:
        if ctx.journal.run(args.run_id) is not None:
            return args.run_id, None
        try:
            remote = lookups.run_by_key(ctx, args.run_id)
        except lookups.CallFailed as failed:
            if failed.answer.kind in (Kind.TRANSIENT, Kind.SERVER_ERROR):
                return args.run_id, None      # trust -r: the record waits for OneVizion
            raise ctx.lookup_error(failed) from None
        if remote is None:
            raise NotFoundError(f"no run {args.run_id!r} in OneVizion")
        return args.run_id, remote
    hinted = os.environ.get("HUB_RUN_ID")
    unreachable = False
    if hinted:
        local = ctx.journal.run(hinted)
        if local is not None and local.integration_key == integration:
            return hinted, None
        if local is None:
            try:
                remote = lookups.run_by_key(ctx, hinted)
                if remote is not None and remote.integration_key == integration:
                    return hinted, remote
            except lookups.CallFailed as failed:
                if failed.answer.kind not in (Kind.TRANSIENT, Kind.SERVER_ERROR):
                    raise ctx.lookup_error(failed) from None
                unreachable = True
    if not unreachable:
        try:
            remote = lookups.latest_running_run(ctx, integration)
        except lookups.CallFailed as failed:
            if failed.answer.kind not in (Kind.TRANSIENT, Kind.SERVER_ERROR):
                raise ctx.lookup_error(failed) from None
            unreachable = True
        else:
            if remote is not None:
                return remote.key, remote
    local = lookups.local_open_run(ctx, integration)
    if local is not None:
        return local, None
    if unreachable:
        return None
    raise lookups.not_running_message(ctx, integration)


def deliver(ctx: context.Context, args, record: RecordRow, remote) -> int:
    """The record into the journal with the run it needs; delivered by the run's live owner, or
    by this script."""
    known = RunRow(run_key=record.run_key, installation=ctx.installation.identity(),
                   integration_key=args.integration_id, origin=Origin.KNOWN, settings=ctx.settings(),
                   started_at=record.created_at, owner=ctx.owner.id, last_activity=record.created_at,
                   trackor_id=remote.trackor_id if remote else None)
    try:
        existing = ctx.journal.add_helper_record(record, known)
    except Exception as exc:  # noqa: BLE001 - the journal cannot take it now: send it from memory
        ctx.log.warning("record %s: the journal cannot take it (%s); sending it directly", record.log_key, exc)
        existing = None
        run = RunProgress(known, [record])
        ctx.engine.add(run)
    else:
        if existing is not None and ctx.owner.alive(existing.owner) and existing.owner != ctx.owner.id:
            return wait_for_owner(ctx, record)
        if existing is not None:
            adopted = ctx.adopt_orphans(keys=[record.run_key], first=[record.log_key])
            if not adopted:   # its owner came back to life, or another helper took it: they deliver it
                return wait_for_owner(ctx, record)
        else:
            ctx.engine.add(RunProgress(known, [record]))
    return finish(ctx, record)


def wait_for_owner(ctx: context.Context, record: RecordRow) -> int:
    """A live process delivers the run: wait until the journal no longer owes the record. If
    that process ends first (another helper script that was only delivering its own record),
    take the run over and deliver it here."""
    deadline = time.monotonic() + delivery_seconds()
    while time.monotonic() < deadline:
        row = ctx.journal.record(record.log_key)
        if row is None:
            return delivered(ctx, record)
        if row.state is ItemState.REFUSED:
            return refused(ctx, record, row.answer)
        run = ctx.journal.run(record.run_key)
        if run is not None and not ctx.owner.alive(run.owner) and \
                ctx.adopt_orphans(keys=[record.run_key], first=[record.log_key]):
            return finish(ctx, record)
        time.sleep(0.01)
    ctx.console.warning(f"record {record.log_key} kept in the local journal; the wrapper delivering run "
                        f"{record.run_key} sends it when OneVizion takes it")
    return V.EXIT_JOURNALED


def finish(ctx: context.Context, record: RecordRow) -> int:
    engine = ctx.engine
    engine.wait([record.run_key], delivery_seconds())
    with engine.lock:
        run = engine.run(record.run_key)
        mine = run.records.get(record.log_key)
        if record.log_key in run.done_helper_records:
            state, answer = ItemState.DELIVERED, None
        else:
            state, answer = (mine.state, mine.answer) if mine is not None else (record.state, record.answer)
        create_refused = run.row.create.refused and run.row.create.answer
    if state is ItemState.DELIVERED:
        code = delivered(ctx, record)
    elif state is ItemState.REFUSED or create_refused:
        code = refused(ctx, record, answer or create_refused)
    else:
        reason = engine.halted or "OneVizion did not confirm it in time"
        ctx.log.warning("record %s for run %s kept in the journal: %s", record.log_key, record.run_key, reason)
        ctx.console.warning(f"record {record.log_key} kept in the local journal ({reason}); the next invocation "
                            f"delivers it")
        code = V.EXIT_JOURNALED
    backlog(ctx)
    return code


def backlog(ctx: context.Context) -> None:
    """What earlier invocations left: about a second of it, after this script's own item."""
    try:
        adopted = ctx.adopt_orphans()
    except Exception:  # noqa: BLE001 - the script's own item is done; the log says what failed
        ctx.log.exception("the journal's backlog could not be taken over")
        return
    if adopted:
        ctx.engine.wait(adopted, BACKLOG_SECONDS, within=BACKLOG_SECONDS)


def delivered(ctx: context.Context, record: RecordRow) -> int:
    ctx.log.info("record %s added to run %s", record.log_key, record.run_key)
    wanted = ctx.args.print_id or (sys.stdout is not None and sys.stdout.isatty())
    if wanted and not ctx.console.hand_over(record.log_key, f"the record's ID {record.log_key}",
                                            "the record was added all the same"):
        return V.EXIT_WARNINGS
    return V.EXIT_OK


def refused(ctx: context.Context, record: RecordRow, answer: Optional[str]) -> int:
    message = verdict(True, None, [f"record {record.log_key}: {answer}"], 0, 0).message
    ctx.console.error(f"run {record.run_key}: {message}")
    return V.EXIT_REFUSED
