"""The SPEC's answer table (§5 "Every answer counts") as sandbox rules, the calls the hub makes
as rule matchers, and what the answer tests look at afterwards: OneVizion's records, the
journal, stderr."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
import struct
from typing import Dict, List, Optional

import sandbox as sandbox_pkg
from tests.hubtest import fixture_command

SECRET = sandbox_pkg.PASSWORD
FRAME = struct.Struct("<QBdI")   # a spool frame's header (hub/spool.py)
LOG_TRACKORS = r"^/api/v3/trackor_types/IntegrationLog/trackors$"
RUN_TRACKORS = r"^/api/v3/trackor_types/IntegrationRun/trackors$"

# Each kind of call the wrapper makes for a run, as the match part of a rule.
CALLS = {
    "run create": dict(method="POST", path=RUN_TRACKORS),
    "Last Run": dict(method="PUT", path=r"^/api/v3/trackors/\d+$", body_contains="INT_LAST_RUN"),
    "record create": dict(method="POST", path=LOG_TRACKORS),
    "file upload": dict(method="POST", path=r"^/api/v3/trackor/\d+/file/IL_FILE$"),
    "run file": dict(method="POST", path=r"^/api/v3/trackor/\d+/file/IR_FILE$"),
    "final status": dict(method="PUT", path=r"^/api/v3/trackors/\d+$", body_contains="IR_FINISH"),
}

# Retried with backoff. "timeout" needs HUB_REQUEST_SECONDS below its delay.
TRANSIENT = {
    "reset": dict(reset=True),
    "dropped": dict(drop=True),
    "timeout": dict(delay_ms=4000, status=503),
    "trickle": dict(body_size=4000, trickle_bytes_per_s=1, content_type="application/json"),
    "cut short": dict(body_size=1000, cut_after_bytes=10, content_type="application/json"),
    "408": dict(status=408, body="Request Timeout"),
    "429": dict(status=429, body="Too Many Requests"),
    "429 with Retry-After": dict(status=429, headers={"Retry-After": "1"}, body="Too Many Requests"),
    "502": dict(status=502, content_type="text/html", body="<html>Bad Gateway</html>"),
    "503": dict(status=503, body="Service Unavailable"),
    "504": dict(status=504, content_type="text/html", body="<html>Gateway Timeout</html>"),
}

# Given with after_commit: the server did the work, the client saw a failure.
AMBIGUOUS = {
    "reset": dict(reset=True),
    "dropped": dict(drop=True),
    "500": dict(status=500, body="Internal error"),
    "503": dict(status=503, body="Service Unavailable"),
    "timeout": dict(delay_ms=4000, status=503),
    "cut short": dict(body_size=1000, cut_after_bytes=10, content_type="application/json"),
    "HTML page": dict(content_type="text/html", body="<html>Gateway</html>"),
}

# Quarantined. WHY: what --status shows as the answer that refused it (secrets masked).
REFUSED = {
    "400": dict(status=400, body=f"Bad request from hub.admin with password {SECRET}"),
    "403": dict(status=403, body=f"Forbidden: hub.admin/{SECRET} lacks the privilege"),
    "404": dict(status=404, body="Not found"),
    "409": dict(status=409, body="Conflict"),
    "413": dict(status=413, body="Request Entity Too Large"),
    "422": dict(status=422, body="Unprocessable Entity"),
    "login redirect": dict(status=302, headers={"Location": "https://sso.example.com/login"}),
    "HTML 200": dict(content_type="text/html", body="<html>Maintenance</html>"),
    "[] 200": dict(json=[]),
}
WHY = {
    "400": "400: Bad request from hub.admin with password ***",
    "403": "403: Forbidden: hub.admin/*** lacks the privilege",
    "404": "404: Not found",
    "409": "409: Conflict",
    "413": "413: Request Entity Too Large",
    "422": "422: Unprocessable Entity",
    "login redirect": "302: redirected to https://sso.example.com/login",
    "HTML 200": "200: text/html, not JSON: <html>Maintenance</html>",
    "[] 200": "200: something other than",
}


def numbered(count: int) -> List[str]:
    return [f"line {n:06d}" for n in range(1, count + 1)]


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text


def rule_used_up(hub) -> bool:
    """Every rule answered all its times: the answer under test was really given."""
    return hub.sandbox.rules() == []


def main(hub, capsys, *args):
    """IntegrationWrapper.py in-process (--status, --replay, --discard): (exit code, stdout + stderr)."""
    from hub.wrapper import main as wrapper_main
    capsys.readouterr()
    code = wrapper_main(hub.common(*args))
    said = capsys.readouterr()
    assert_no_traceback(said.err)
    return code, said.out + said.err


def journal(hub, sql: str, args=()) -> list:
    path = os.path.join(hub.log_dir, "journal.sqlite3")
    db = sqlite3.connect(path, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(sql, args)]
    finally:
        db.close()


def journal_refused(hub) -> List[str]:
    """Every refused item in the journal, as "what: answer"."""
    found = [f"record {r['log_key']}: {r['answer']}" for r in journal(hub, "SELECT * FROM records WHERE state=3")]
    for run in journal(hub, "SELECT * FROM runs"):
        for step in ("create", "last_run", "final", "run_file"):
            if run[f"{step}_state"] == 3:
                found.append(f"{step}: {run[step + '_answer']}")
    return found


@dataclass
class Outcome:
    """One wrapper run: its exit code, stderr, and ways to look at what arrived."""

    hub: object
    code: int
    err: str
    key: str                 # the Integration's key
    expected: List[str]      # every line the child printed, in order

    def run(self) -> Optional[Dict]:
        runs = self.hub.runs(self.key)
        assert len(runs) <= 1, runs
        return runs[0] if runs else None

    def run_key(self) -> str:
        run = self.run()
        if run is not None:
            return run["TRACKOR_KEY"]
        [row] = journal(self.hub, "SELECT run_key FROM runs WHERE integration_key=?", (self.key,))
        return row["run_key"]

    def lines(self) -> List[str]:
        return self.hub.lines(self.run_key())

    def file_record(self) -> Dict:
        [record] = [r for r in self.hub.logs(self.run_key()) if r["IL_DESCRIPTION"].endswith("report.txt")]
        return record

    def journal_records(self):
        from hub.journal import _record_row
        return [_record_row(row) for row in journal(self.hub, "SELECT * FROM records")]

    def journal_runs(self):
        from hub.journal import _run_row
        return [_run_row(row) for row in journal(self.hub, "SELECT * FROM runs")]

    def assert_no_duplicates(self) -> None:
        logs = self.hub.logs(self.run_key())
        keys = [r["TRACKOR_KEY"] for r in logs]
        assert len(keys) == len(set(keys)), keys
        lines = self.lines()
        assert len(lines) == len(set(lines)), lines

    def assert_nothing_lost(self) -> None:
        """Every line in OneVizion or in the journal (records not yet delivered), in order, once."""
        run_key = self.run_key()
        texts = {r["TRACKOR_KEY"]: r["IL_DESCRIPTION"] for r in self.hub.logs(run_key) if self.run() is not None}
        for record in journal(self.hub, "SELECT * FROM records WHERE run_key=? AND state<>2", (run_key,)):
            assert record["log_key"] not in texts or record["state"] != 0, record["log_key"]
            texts.setdefault(record["log_key"], json.loads(record["fields"])["IL_DESCRIPTION"])
        lines = [line for key in sorted(texts) for line in texts[key].split("\n")]
        assert lines + self.unparsed_output(run_key) == self.expected

    def unparsed_output(self, run_key: str) -> List[str]:
        """The child's stdout lines the spool holds that are not records yet (log/spool/<run>/:
        frames of chunk number, stream, time, length, then the bytes)."""
        [row] = journal(self.hub, "SELECT parse FROM runs WHERE run_key=?", (run_key,)) or [{"parse": "{}"}]
        parsed_up_to = json.loads(row["parse"]).get("next_chunk", 0)
        folder = os.path.join(self.hub.log_dir, "spool", run_key)
        data = b""
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name), "rb") as segment:
                raw, offset = segment.read(), 0
            while offset < len(raw):
                number, stream, _, length = FRAME.unpack_from(raw, offset)
                if number >= parsed_up_to and stream == 1:
                    data += raw[offset + FRAME.size:offset + FRAME.size + length]
                offset += FRAME.size + length
        return data.decode().splitlines()

    def assert_refusal_said_once(self) -> None:
        assert_no_traceback(self.err)
        lines = self.err.splitlines()
        assert len(lines) == 1 and "refused" in lines[0] and "see --status" in lines[0], self.err


def outcome_of(hub, capsys, name: str, count: int, *flags) -> Outcome:
    """The wrapper, in-process, on a child that prints `count` numbered lines with the path of a
    file (report.txt) in the middle: records, a record's file, the run's file."""
    key = hub.add_integration(name)
    report = os.path.join(hub.tmp, "report.txt")
    with open(report, "w") as out:
        out.write("42 rows\n")
    lines = numbered(count)
    expected = lines[:count // 2] + [report] + lines[count // 2:]
    child = fixture_command("says.py", *(f"out:{line}" for line in expected))
    capsys.readouterr()
    code = hub.wrapper(hub.integrations_file({"IntegrationName": name, "ExecutablePath": child}), *flags)
    return Outcome(hub, code, capsys.readouterr().err, key, expected)
