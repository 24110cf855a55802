"""IntegrationWrapperAddingLog.py: add one log record to the running run of an
integration (SPEC §6). When OneVizion cannot be reached, the record waits in the
journal (exit 75) and the next invocation of any script delivers it."""

from __future__ import annotations

import os
import secrets
import sys
import time
from typing import Optional, Sequence

from hub import cli, context, journal
from hub import vocabulary as V
from hub.api import exact
from hub.errors import ApiError, NotFoundError, UnreachableError, UsageError

SCRIPT = "IntegrationWrapperAddingLog"
# How long a helper script keeps trying OneVizion before it leaves its work to the journal (exit 75).
REPLAY_SECONDS = float(os.environ.get("HUB_DELIVERY_SECONDS", "5"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = cli.parse(cli.adding_log_parser(), argv)
    return context.run_script(args, SCRIPT, lambda ctx: add_log(ctx, args))


def integration_by_id(ctx: context.Context, integration_key: str) -> dict:
    """The Integration whose ID (TRACKOR_KEY) is given, with its Enabled field (exit 4 when missing,
    3 when OneVizion fails)."""
    s = ctx.schema.integration
    try:
        found = ctx.call(ctx.api.find, s.trackor_type, {"TRACKOR_KEY": exact(integration_key)}, [s.enabled])
    except ApiError as exc:
        raise UnreachableError(exc.message) from None
    if not found:
        raise NotFoundError(f"no Integration with ID {integration_key!r} in OneVizion")
    return found[0]


def latest_running_run(ctx: context.Context, integration_key: str) -> str:
    """The integration's newest run whose status is Running (exit 4 when there is none)."""
    s = ctx.schema
    integration_by_id(ctx, integration_key)
    try:
        runs = ctx.call(ctx.api.find, s.run.trackor_type,
                            {s.run.status: exact(s.run.running),
                             f"{s.integration.trackor_type}.TRACKOR_KEY": exact(integration_key)},
                            [s.run.start], sort=f"{s.run.start}:desc", per_page=1)
    except ApiError as exc:
        raise UnreachableError(exc.message) from None
    if not runs:
        raise NotFoundError(f"integration {integration_key} has no run with status {s.run.running!r}")
    return runs[0]["TRACKOR_KEY"]


def target_run(ctx: context.Context, args) -> str:
    """-r, else HUB_RUN_ID when the wrapper set it for this integration, else the latest Running run."""
    if args.run_id:
        return args.run_id
    if os.environ.get("HUB_RUN_ID") and os.environ.get("HUB_INTEGRATION_ID") == args.integration_id:
        return os.environ["HUB_RUN_ID"]
    try:
        return latest_running_run(ctx, args.integration_id)
    except UnreachableError:
        local = ctx.journal.open_run_of(args.integration_id)
        if local:
            return local
        raise


def add_log(ctx: context.Context, args) -> int:
    """Journal the record, then deliver it now through the same idempotent path the
    wrapper uses (client-set key, read back after a refusal, retries)."""
    context.replay(ctx, REPLAY_SECONDS)
    run_key = target_run(ctx, args)
    now = time.time()
    key = f"{run_key}-X{int(now * 1000):x}{secrets.token_hex(2)}"
    description = args.description if args.description is not None else args.message
    record = ctx.journal.add_record(run_key, args.integration_id, key, args.message_type, args.message,
                                    description[:V.DESCRIPTION_LIMIT],
                                    os.path.abspath(args.file) if args.file else None, now)
    sender = ctx.sender(workers=1)
    state = sender.send_one(run_key, record, time.monotonic() + REPLAY_SECONDS)
    if state == journal.REJECTED:
        error = ctx.journal.record(record)["error"] or "refused"
        ctx.journal.forget_record(record)
        ctx.journal.prune(run_key)
        if "404" in error:
            raise NotFoundError(f"run {run_key} not found in OneVizion ({error})")
        raise UsageError(f"OneVizion refused the record: {error}")
    if state != journal.DELIVERED:
        ctx.journal.release(run_key)
        ctx.log.warning("record %s for run %s kept in the journal: %s", key, run_key, sender.last_error)
        print(f"OneVizion unavailable ({sender.last_error}); record {key} kept in the local journal, the next "
              f"invocation delivers it", file=sys.stderr)
        return V.EXIT_JOURNALED
    ctx.journal.prune(run_key)
    ctx.log.info("record %s added to run %s", key, run_key)
    print(key)
    return V.EXIT_OK
