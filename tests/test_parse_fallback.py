"""A defect in turning output into records never loses the output nor holds the run back: the
chunks go to OneVizion as plain text, the run closes, and stderr says so once (no traceback)."""

from __future__ import annotations

from tests.hubtest import fixture_command


def test_a_parser_that_fails_sends_the_output_as_plain_text_and_the_run_closes(hub, monkeypatch, capsys):
    from hub import records

    def broken(self, stream, data, at):
        raise ValueError("a parser defect")

    monkeypatch.setattr(records.RecordMaker, "feed", broken)
    key = hub.add_integration("Broken parser")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Broken parser", "ExecutablePath": fixture_command(
        "says.py", "out:first", "err:second", "out:third")}))
    assert code == 0
    [run] = hub.runs(key)
    assert run["IR_STATUS"] == "Executed without Warnings"
    text = "\n".join(r["IL_DESCRIPTION"] for r in hub.logs(run["TRACKOR_KEY"]))
    for line in ("first", "second", "third"):
        assert line in text
    err = capsys.readouterr().err
    assert "could not be parsed (ValueError: a parser defect)" in err and "Traceback" not in err
