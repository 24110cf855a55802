"""The delivery engine (hub.delivery.Engine) and the journal it writes, without sockets and
without sleeps: a scripted fake of hub.api.OneVizion (find/create/update/upload return or raise
CallFailed(Answer(...)) as the test's script says), a real Journal in tmp_path, an injected
clock and backoff. The engine runs its jobs on the test's thread (`run_jobs`), one at a time,
so every path is deterministic."""

from __future__ import annotations

import json
import logging

import pytest

from hub.journal import Conditions, Journal
from hub.state import ItemState, Origin, ParseState, RecordRow, RunRow, Step

INSTALLATION = "http://onevizion.test|hub.admin"


@pytest.fixture
def journal(tmp_path):
    said = []
    opened = Journal(str(tmp_path), INSTALLATION, Conditions(said.append, logging.getLogger("test")))
    opened.said = said
    yield opened
    opened.close()


def wrapper_row(key="INT-1-run", **changes) -> RunRow:
    row = RunRow(run_key=key, installation=INSTALLATION, integration_key="INT-1", origin=Origin.WRAPPER,
                 settings={}, started_at=1000.0, integration_id=11, last_activity=1000.0,
                 create=Step({"IR_STATUS": "Running"}, ItemState.PENDING),
                 last_run=Step({"INT_LAST_RUN": "now"}, ItemState.PENDING), output_open=True)
    for name, value in changes.items():
        setattr(row, name, value)
    return row


def record(run_key="INT-1-run", seq=1, **changes) -> RecordRow:
    made = RecordRow(f"{run_key}-{seq:06d}", run_key, json.dumps({"IL_DESCRIPTION": f"line {seq}"}), "output", seq)
    for name, value in changes.items():
        setattr(made, name, value)
    return made


# -- the journal ---------------------------------------------------------------------------------

def test_a_run_row_written_after_a_newer_parse_does_not_move_the_parse_back(journal):
    """A snapshot of the run row (the wrapper closing the run) submitted just after the parse job
    wrote its records and the end of the output, but taken before the parse job updated the row
    in memory, must not move the parse position back: the run would then wait for output that
    will never come, and its final status would never go out, in this or any later invocation."""
    row = wrapper_row()
    journal.put_run(row)
    ended = ParseState(next_chunk=3, next_seq=9, ended=True)
    journal.put_records(row.run_key, [record(seq=8)], ended, last_activity=1005.0)
    stale = wrapper_row(output_open=False, final=Step({"IR_STATUS": "Executed without Warnings"}, ItemState.PENDING))
    journal.put_run(stale)
    kept = journal.run(row.run_key)
    assert kept.parse == ended and kept.last_activity == 1005.0
    assert kept.final.fields == {"IR_STATUS": "Executed without Warnings"} and not kept.output_open
