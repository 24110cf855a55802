"""--status and --discard: what the local journal holds, read from the journal alone (no
network), and dropping a run or a record from it for good (SPEC §10)."""

from __future__ import annotations

import os
import time

from hub import vocabulary as V
from hub.context import Context, spool_folder
from hub.errors import NotFoundError, UsageError
from hub.state import ItemState, Origin


LOOSE_PREFIX = "loose-"   # the key --status shows for a record still waiting to be told its run


def show(ctx: Context) -> int:
    """One block per run of this installation: key, integration, state, what it owes, what was
    refused and why, age; then the records still to be told their run; then how many rows
    belong to other installations."""
    journal, now = ctx.journal, time.time()
    if journal.db is None:
        print(f"the journal cannot be read now: {journal.condition}; what it holds stays in it (not shown)")
        return V.EXIT_JOURNALED
    owed_any = refused_any = False
    runs = journal.runs()
    for row in runs:
        items, refusals = _run_owes(ctx, row)
        owed_any = owed_any or bool(items)
        refused_any = refused_any or bool(refusals)
        print(f"{row.run_key}  integration {row.integration_key}  {_state(ctx, row)}  "
              f"age {_age(now - row.started_at)}")
        print(f"    owed: {', '.join(items) if items else 'nothing'}")
        for what, answer in refusals:
            print(f"    refused: {what}: {answer}")
    for loose in journal.loose():
        owed_any = True
        print(f"{LOOSE_PREFIX}{loose['id']}  a record for integration {loose['integration_key']} journaled "
              f"{_age(now - loose['at'])} ago, waiting for OneVizion to tell its run")
    for loose in journal.loose(refused=True):
        refused_any = True
        print(f"{LOOSE_PREFIX}{loose['id']}  a record for integration {loose['integration_key']} "
              f"(suffix {loose['log_suffix']}) is refused: {loose['answer']}")
    others = journal.other_installations()
    if not runs and not owed_any and not refused_any:
        print("the journal owes this installation nothing")
    if others:
        print(f"{others} run{'s' if others != 1 else ''} in this journal belong{'s' if others == 1 else ''} to other "
              f"installations (another Passwords.json): not shown, not delivered by this one")
    if journal.condition:
        print(f"the journal cannot be read or written now: {journal.condition}")
    if refused_any:
        return V.EXIT_REFUSED
    return V.EXIT_JOURNALED if owed_any else V.EXIT_OK


def _run_owes(ctx: Context, row):
    """What one run still owes (phrases) and what OneVizion refused of it ((what, answer) pairs)."""
    records = ctx.journal.records(row.run_key)
    owed = [r for r in records if r.state in (ItemState.PENDING, ItemState.CREATED)]
    refused = [r for r in records if r.state is ItemState.REFUSED]
    raw = _raw_bytes(ctx, row.run_key)
    items = []
    if owed:
        items.append(f"{len(owed)} record{'s' if len(owed) != 1 else ''}")
    if raw:
        items.append(f"{raw} bytes of output not yet made into records")
    steps = row.statuses()
    items += [name for name, step in steps if step.owed]
    if row.run_file is not None and row.run_file_state is ItemState.PENDING:
        items.append("the run's file")
    refusals = [(f"record {r.log_key}", r.answer) for r in refused]
    refusals += [(name, step.answer) for name, step in steps if step.refused]
    if row.run_file is not None and row.run_file_state is ItemState.REFUSED:
        refusals.append((f"the run's file {row.run_file[1]}", row.run_file_answer))
    return items, refusals


def discard(ctx: Context, key: str) -> int:
    """Drop a run (with all it owes), one record, or one record still waiting for its run
    (loose-N, as --status shows it) from the journal for good."""
    journal = ctx.journal
    if key.startswith(LOOSE_PREFIX) and key[len(LOOSE_PREFIX):].isdigit():
        loose_id = int(key[len(LOOSE_PREFIX):])
        for loose in journal.loose() + journal.loose(refused=True):
            if loose["id"] == loose_id:
                journal.drop_loose(loose_id)
                journal.flush(force=True)
                ctx.log.warning("--discard: the journaled record %s of integration %s dropped (%s)", key,
                                loose["integration_key"], loose["answer"] or "waiting for its run")
                print(f"discarded record {key}")
                return V.EXIT_OK
    row = journal.run(key)
    if row is not None:
        if ctx.owner.alive(row.owner):
            raise UsageError(f"run {key} is being delivered by a running process ({row.owner}); stop it first")
        records = journal.records(key)
        journal.discard_run(key)
        _remove_spool(ctx, key)
        journal.flush(force=True)
        ctx.log.warning("--discard: run %s dropped from the journal with %d records (%s)", key, len(records),
                        ", ".join(f"{r.log_key}: {r.state.name.lower()}" for r in records[:20]))
        print(f"discarded run {key} and the {len(records)} records it owed")
        return V.EXIT_OK
    record = journal.record(key)
    if record is not None:
        parent = journal.run(record.run_key)
        if parent is not None and ctx.owner.alive(parent.owner):
            raise UsageError(f"record {key} belongs to run {record.run_key}, which a running process delivers "
                             f"({parent.owner}); stop it first")
        journal.drop_records([key])
        journal.flush(force=True)
        ctx.log.warning("--discard: record %s of run %s dropped from the journal (%s: %s)", key, record.run_key,
                        record.state.name.lower(), record.answer or "")
        print(f"discarded record {key}")
        return V.EXIT_OK
    raise NotFoundError(f"--discard {key}: no run or record with that key in the journal of {ctx.log_dir} "
                        f"(--status lists them)")


def _state(ctx: Context, row) -> str:
    if ctx.owner.alive(row.owner):
        return "being delivered by a running process"
    if row.create.refused:
        return "its create was refused"
    if row.origin is Origin.WRAPPER and row.final.fields is None:
        return "abandoned (its wrapper stopped before the run ended)"
    if row.final.fields is not None:
        return "ended, waiting to be delivered"
    return "open (opened by the RunController)" if row.origin is Origin.CONTROLLER else "waiting to be delivered"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _raw_bytes(ctx: Context, run_key: str) -> int:
    folder = spool_folder(ctx.log_dir, run_key)
    try:
        return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
    except OSError:
        return 0


def _remove_spool(ctx: Context, run_key: str) -> None:
    import shutil
    shutil.rmtree(spool_folder(ctx.log_dir, run_key), ignore_errors=True)
