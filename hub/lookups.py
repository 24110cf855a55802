"""The reads the two helper scripts make before they send anything: an Integration by its
ID, a run by its key, an integration's latest Running run, and the same questions asked
of the local journal when OneVizion cannot answer (a run whose create still waits in the
journal is a run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hub.api import CallFailed, exact
from hub.retry import call_with_retries
from hub.context import Context
from hub.errors import NotFoundError
from hub.schema import field_value
from hub.state import Origin


@dataclass
class RemoteRun:
    key: str
    trackor_id: int
    status: Optional[str]
    integration_key: Optional[str]


def integration_by_id(ctx: Context, integration_key: str) -> dict:
    """The Integration whose ID (TRACKOR_KEY) is given, with its Enabled field (exit 4 when
    missing, 3 when OneVizion fails)."""
    s = ctx.schema.integration
    found = ctx.lookup(ctx.api.find, s.trackor_type, {"TRACKOR_KEY": exact(integration_key)}, [s.enabled])
    found = [row for row in found if field_value(row, "TRACKOR_KEY") == integration_key]
    if not found:
        raise NotFoundError(f"no Integration with ID {integration_key!r} in OneVizion")
    return found[0]


def _find(ctx: Context, *args, **kwargs):
    """ctx.api.find with the few quick retries every lookup gets on a transient answer (SPEC §5:
    a 503 is "not now", not "unreachable"); raises CallFailed when they are used up."""
    return call_with_retries(ctx.api.find, *args, base=ctx.backoff_base, **kwargs)


def run_by_key(ctx: Context, run_key: str) -> Optional[RemoteRun]:
    """The run with exactly this key in OneVizion, or None. Raises CallFailed when OneVizion
    does not answer well (the caller decides: journal, or exit)."""
    s = ctx.schema
    parent = f"{s.integration.trackor_type}.TRACKOR_KEY"
    rows = _find(ctx, s.run.trackor_type, {"TRACKOR_KEY": exact(run_key)}, [s.run.status, parent])
    for row in rows:
        if field_value(row, "TRACKOR_KEY") == run_key:
            return RemoteRun(run_key, row["TRACKOR_ID"], field_value(row, s.run.status), field_value(row, parent))
    return None


def latest_running_run(ctx: Context, integration_key: str) -> Optional[RemoteRun]:
    """The integration's newest run whose status is Running, or None (two started in the same
    second: the one created last). Raises CallFailed."""
    s = ctx.schema
    rows = _find(ctx, s.run.trackor_type, {s.run.status: exact(s.run.running),
                                           f"{s.integration.trackor_type}.TRACKOR_KEY": exact(integration_key)},
                 [s.run.start, s.run.status], sort=f"{s.run.start}:desc,TRACKOR_ID:desc", per_page=1)
    if not rows:
        return None
    return RemoteRun(rows[0]["TRACKOR_KEY"], rows[0]["TRACKOR_ID"], field_value(rows[0], s.run.status),
                     integration_key)


def local_open_run(ctx: Context, integration_key: str) -> Optional[str]:
    """The newest run of the integration in the local journal that is still open: a wrapper's
    run whose child is running, or one the RunController opened and nobody closed."""
    candidates = [row for row in ctx.journal.runs() if row.integration_key == integration_key
                  and row.final.fields is None and row.origin in (Origin.WRAPPER, Origin.CONTROLLER)
                  and (row.origin is Origin.CONTROLLER or ctx.owner.alive(row.owner))]
    return candidates[-1].run_key if candidates else None


def not_running_message(ctx: Context, integration_key: str) -> NotFoundError:
    """Exit 4, saying whether the integration itself is missing or only has no open run."""
    integration_by_id(ctx, integration_key)
    return NotFoundError(f"integration {integration_key} has no run with status {ctx.schema.run.running!r}")


__all__ = ["RemoteRun", "integration_by_id", "run_by_key", "latest_running_run", "local_open_run",
           "not_running_message", "CallFailed"]
