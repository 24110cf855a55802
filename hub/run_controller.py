"""IntegrationWrapperRunController.py: open a run ("Running") or close it ("Executed
with/without Warnings") from outside the wrapper (SPEC §7)."""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

from hub import cli, context
from hub import vocabulary as V
from hub.adding_log import REPLAY_SECONDS, integration_by_id, latest_running_run
from hub.api import exact
from hub.errors import ApiError, DisabledError, NotFoundError, UnreachableError
from hub.run import checkbox, new_run_key

SCRIPT = "IntegrationWrapperRunController"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = cli.parse(cli.run_controller_parser(), argv)
    return context.run_script(args, SCRIPT, lambda ctx: control(ctx, args))


def control(ctx: context.Context, args) -> int:
    context.replay(ctx, REPLAY_SECONDS)
    return start(ctx, args) if args.action == "start" else stop(ctx, args)


def start(ctx: context.Context, args) -> int:
    """Create a Running run, set Last Run, print the run's key alone on stdout."""
    s = ctx.schema
    integration = integration_by_id(ctx, args.integration_id)
    if not checkbox(integration.get(s.integration.enabled)) and not args.force:
        raise DisabledError(f"integration {args.integration_id} is disabled (Enabled unchecked); --force starts a run anyway")
    now = time.time()
    run_key = new_run_key(args.integration_id, now)
    create = {s.run.status: s.run.running, s.run.start: ctx.now_text(now)}
    last_run = {s.integration.last_run: ctx.now_text(now)}
    ctx.journal.open_run(run_key, args.integration_id, integration["TRACKOR_ID"], "", True, create, last_run,
                         supervised=False)
    sender = ctx.sender(workers=1)
    delivered = sender.deliver(run_key, time.monotonic() + REPLAY_SECONDS)
    print(run_key)
    if not delivered:
        ctx.journal.release(run_key)
        print(f"OneVizion unavailable ({sender.last_error or sender.failure}); run {run_key} kept in the local "
              f"journal, the next invocation creates it", file=sys.stderr)
        return V.EXIT_JOURNALED
    ctx.log.info("run %s started by the RunController", run_key)
    return V.EXIT_OK


def stop(ctx: context.Context, args) -> int:
    """Close -r or the latest Running run: Finish = now, status by -e."""
    s = ctx.schema
    run_key = args.run_id or latest_running_run(ctx, args.integration_id)
    fields = {s.run.finish: ctx.now_text(), s.run.status: s.run.warnings if args.errors else s.run.ok}
    try:
        found = ctx.call(ctx.api.find, s.run.trackor_type, {"TRACKOR_KEY": exact(run_key)}, [s.run.status])
        if not found:
            if ctx.journal.run(run_key) is None:
                raise NotFoundError(f"no run {run_key!r} in OneVizion")
        else:
            ctx.call(ctx.api.update, found[0]["TRACKOR_ID"], fields)
            ctx.log.info("run %s stopped by the RunController: %s", run_key, fields[s.run.status])
            return V.EXIT_OK
    except ApiError as exc:
        if not exc.transient and exc.status != 401:
            raise
        reason = exc.message
    except UnreachableError as exc:
        reason = exc.message
    else:
        reason = "the run is still waiting in the journal to be created"
    ctx.journal.close_known_run(run_key, args.integration_id, fields)
    ctx.journal.release(run_key)
    print(f"OneVizion unavailable ({reason}); the status of run {run_key} is kept in the local journal, the next "
          f"invocation delivers it", file=sys.stderr)
    return V.EXIT_JOURNALED
