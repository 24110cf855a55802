"""IntegrationWrapper.py against the sandbox over real HTTP, with real child processes (SPEC §5)."""

from __future__ import annotations

import json
import os

import pytest

from tests.hubtest import fixture_command


def only_run(hub, key):
    runs = hub.runs(key)
    assert len(runs) == 1, runs
    return runs[0]


def test_the_example_integrations_land_as_runs_records_and_files(hub, repo_root):
    code = hub.wrapper(os.path.join(repo_root, "Integration.example.json"))
    assert code == 1  # the export exits 3: with Warnings
    imp, exp = only_run(hub, "INT-1"), only_run(hub, "INT-2")
    assert imp["IR_STATUS"] == "Executed without Warnings"
    assert exp["IR_STATUS"] == "Executed with Warnings"
    assert imp["IR_START"] and imp["IR_FINISH"] and imp["IR_FILE"]["file_name"].endswith(".csv")
    messages = [r["IL_MESSAGE"] for r in hub.logs(imp["TRACKOR_KEY"])]
    assert messages[0] == "Starting import of 5 rows" and messages[-1] == "Import finished: 5 rows"
    warning = [r for r in hub.logs(imp["TRACKOR_KEY"]) if r["IL_MESSAGE_TYPE"] == "Warning"]
    assert [w["IL_MESSAGE"] for w in warning] == ["WARNING: row 2 has no site code, used the default"]
    with_file = [r for r in hub.logs(imp["TRACKOR_KEY"]) if r["IL_FILE"]]
    assert len(with_file) == 1 and with_file[0]["IL_MESSAGE"].endswith(".csv")
    errors = [r["IL_MESSAGE"] for r in hub.logs(exp["TRACKOR_KEY"]) if r["IL_MESSAGE_TYPE"] == "Error"]
    assert errors[-1] == "Exit code 3"
    assert any("refused by sftp.example.org" in e for e in errors)  # ${EXPORT_TARGET} from Environment
    integration = hub.sandbox.trackors("Integration")[0]
    assert integration["INT_LAST_RUN"] == imp["IR_START"]


def test_record_keys_are_the_run_key_and_a_six_digit_sequence(hub):
    hub.add_integration("Keys")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Keys",
                                              "ExecutablePath": fixture_command("says.py", "out:a", "out:b")}))
    assert code == 0
    run = hub.runs()[-1]
    keys = [r["TRACKOR_KEY"] for r in hub.logs(run["TRACKOR_KEY"])]
    assert keys == [f"{run['TRACKOR_KEY']}-000001", f"{run['TRACKOR_KEY']}-000002"]
    assert run["TRACKOR_KEY"].startswith(run["_parent_key"] + "-")


def test_interleaved_streams_keep_their_order_and_types(hub):
    key = hub.add_integration("Interleaved")
    hub.wrapper(hub.integrations_file({"IntegrationName": "Interleaved",
                                       "ExecutablePath": fixture_command("interleaved.py", "300")}))
    run = only_run(hub, key)
    out = hub.lines(run["TRACKOR_KEY"], "Info")
    err = hub.lines(run["TRACKOR_KEY"], "Error")
    assert out == [f"out {n}" for n in range(0, 300, 2)]
    assert err == [f"err {n}" for n in range(1, 300, 2)]


def test_a_flood_larger_than_the_pipe_buffer_is_delivered_whole_in_order(hub):
    key = hub.add_integration("Flood")
    assert hub.wrapper(hub.integrations_file({"IntegrationName": "Flood",
                                              "ExecutablePath": fixture_command("numbered.py", "20000", "100")})) == 0
    run = only_run(hub, key)
    lines = hub.lines(run["TRACKOR_KEY"])
    assert len(lines) == 20000
    assert [int(l.split()[1]) for l in lines] == list(range(1, 20001))
    records = hub.logs(run["TRACKOR_KEY"])
    assert len(records) < 200  # merged under pressure
    assert all(len(r["IL_DESCRIPTION"]) <= 65000 and len(r["IL_MESSAGE"]) <= 255 for r in records)
    assert all(r["IL_MESSAGE"] == r["IL_DESCRIPTION"].split("\n")[0] for r in records)


def test_a_slow_child_sees_each_line_in_onevizion_before_it_prints_the_next(hub):
    key = hub.add_integration("Slow")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Slow", "ExecutablePath": fixture_command(
        "waits_for_arrival.py", hub.sandbox.url, "5", "3")}))
    assert code == 0
    assert [r["IL_MESSAGE"] for r in hub.logs(only_run(hub, key)["TRACKOR_KEY"])] == \
        [f"slow line {n}" for n in range(1, 6)]


def test_a_line_that_states_its_level_overrides_the_stream(hub):
    key = hub.add_integration("Levels")
    hub.wrapper(hub.integrations_file({"IntegrationName": "Levels", "ExecutablePath": fixture_command(
        "says.py", "out:WARNING:root:disk low", "err:0 errors found", "out:[error] bad row", "out:fine",
        "err:INFO: just chatty")}))
    types = {r["IL_MESSAGE"]: r["IL_MESSAGE_TYPE"] for r in hub.logs(only_run(hub, key)["TRACKOR_KEY"])}
    assert types == {"WARNING:root:disk low": "Warning", "0 errors found": "Error", "[error] bad row": "Error",
                     "fine": "Info", "INFO: just chatty": "Info"}


def test_bad_utf8_crlf_and_a_last_line_without_newline_are_handled(hub):
    key = hub.add_integration("Bytes")
    hub.wrapper(hub.integrations_file({"IntegrationName": "Bytes", "ExecutablePath": fixture_command(
        "says.py", "raw:6f6bff0d0a", "nonl:the end")}))
    assert [r["IL_MESSAGE"] for r in hub.logs(only_run(hub, key)["TRACKOR_KEY"])] == ["ok\ufffd", "the end"]


def test_a_line_longer_than_the_description_limit_is_split_into_marked_parts(hub):
    key = hub.add_integration("Long")
    hub.wrapper(hub.integrations_file({"IntegrationName": "Long",
                                       "ExecutablePath": fixture_command("says.py", "long:150000")}))
    records = hub.logs(only_run(hub, key)["TRACKOR_KEY"])
    assert [r["IL_MESSAGE"][:13] for r in records] == ["(part 1/3) yy", "(part 2/3) yy", "(part 3/3) yy"]
    assert [len(r["IL_DESCRIPTION"]) for r in records] == [65000, 65000, 20000]
    assert all(len(r["IL_MESSAGE"]) == 255 and r["IL_MESSAGE"].endswith("\u2026") for r in records)


def test_a_printed_file_is_uploaded_to_its_record_and_the_run(hub, tmp_path):
    key = hub.add_integration("Files")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "report.csv").write_text("a,b\n1,2\n")
    hub.wrapper(hub.integrations_file({"IntegrationName": "Files", "ExecutablePath": fixture_command(
        "says.py", "out:report.csv", "out:missing.csv", f"out:{tmp_path}"), "ExecutableWorkingDir": str(tmp_path / "work")}))
    run = only_run(hub, key)
    records = hub.logs(run["TRACKOR_KEY"])
    assert [bool(r["IL_FILE"]) for r in records] == [True, False, False]
    assert records[0]["IL_FILE"]["file_name"] == "report.csv" and run["IR_FILE"]["file_name"] == "report.csv"


def test_a_file_over_the_upload_limit_becomes_a_warning(hub, tmp_path):
    key = hub.add_integration("Big")
    big = tmp_path / "big.bin"
    big.write_bytes(b"0" * 3_000_000)
    hub.wrapper(hub.integrations_file({"IntegrationName": "Big", "ExecutablePath": fixture_command(
        "says.py", f"out:{big}")}), "--max-upload-mb", "1")
    [record] = hub.logs(only_run(hub, key)["TRACKOR_KEY"])
    assert record["IL_MESSAGE_TYPE"] == "Warning" and not record["IL_FILE"]
    assert "over the upload limit" in record["IL_DESCRIPTION"]


def test_read_from_stdout_unchecked_logs_stderr_and_files_only(hub, tmp_path):
    key = hub.add_integration("Quiet", read_stdout=0)
    report = tmp_path / "r.txt"
    report.write_text("x")
    hub.wrapper(hub.integrations_file({"IntegrationName": "Quiet", "ExecutablePath": fixture_command(
        "says.py", "out:chatter", "err:trouble", f"out:{report}")}))
    # Two pipes: no order between stdout and stderr.
    assert sorted(r["IL_MESSAGE"] for r in hub.logs(only_run(hub, key)["TRACKOR_KEY"])) == sorted(["trouble", str(report)])


def test_a_disabled_integration_is_skipped_without_a_run(hub):
    key = hub.add_integration("Off", enabled=0)
    assert hub.wrapper(hub.integrations_file({"IntegrationName": "Off", "ExecutablePath": "true"})) == 0
    assert hub.runs(key) == []
    assert "Enabled is unchecked; skipped" in hub.hub_log()


def test_an_unknown_integration_exits_4_and_the_next_entry_still_runs(hub, capsys):
    key = hub.add_integration("Known")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Nobody", "ExecutablePath": "true"},
                                             {"IntegrationName": "Known", "ExecutablePath": "true"}))
    assert code == 4
    assert "no Integration named 'Nobody'" in capsys.readouterr().err
    assert only_run(hub, key)["IR_STATUS"] == "Executed without Warnings"


@pytest.mark.parametrize("entry, reason", [
    ({"ExecutablePath": "/nonexistent/program"}, "no such program"),
    ({"ExecutablePath": os.path.join(os.path.dirname(__file__), "fixtures", "says.py")}, "not executable"),
    ({"ExecutablePath": "true", "ExecutableWorkingDir": "/nonexistent/dir"}, "working directory"),
])
def test_a_child_that_cannot_start_still_gets_a_run_closed_with_an_error(hub, entry, reason):
    key = hub.add_integration("Broken")
    assert hub.wrapper(hub.integrations_file({"IntegrationName": "Broken", **entry})) == 1
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed with Warnings" and run["IR_FINISH"]
    [record] = hub.logs(run["TRACKOR_KEY"])
    assert record["IL_MESSAGE_TYPE"] == "Error" and reason in record["IL_MESSAGE"]


def test_the_child_gets_the_hub_variables_and_its_environment(hub, tmp_path):
    key = hub.add_integration("Env", control="nightly")
    hub.wrapper(hub.integrations_file({"IntegrationName": "Env", "Shell": True, "Environment": {"GREETING": "hi"},
                                       "ExecutablePath": 'echo "$GREETING $HUB_INTEGRATION_ID $HUB_INTEGRATION_NAME '
                                                         '$HUB_CONTROL_PROCESS $HUB_RUN_ID" | tr a-z A-Z'}))
    run = only_run(hub, key)
    [record] = hub.logs(run["TRACKOR_KEY"])
    assert record["IL_MESSAGE"] == f"HI {key} ENV NIGHTLY {run['TRACKOR_KEY']}".upper()


def test_a_timeout_stops_the_child_and_says_so(hub):
    key = hub.add_integration("Slowpoke")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Slowpoke", "Timeout": 0.5,
                                              "ExecutablePath": fixture_command("sleeper.py", "ignore-term")}),
                       "--grace", "0.3")
    assert code == 1
    run = only_run(hub, key)
    assert run["IR_STATUS"] == "Executed with Warnings"
    assert "Timeout of 0.5 s" in hub.logs(run["TRACKOR_KEY"])[-1]["IL_MESSAGE"]


def test_name_and_control_process_select_entries(hub):
    a, b = hub.add_integration("A", control="hourly"), hub.add_integration("B", control="daily")
    path = hub.integrations_file({"IntegrationName": "A", "ExecutablePath": "true"},
                                 {"IntegrationName": "B", "ExecutablePath": "true"})
    assert hub.wrapper(path, "--name", "B") == 0
    assert (len(hub.runs(a)), len(hub.runs(b))) == (0, 1)
    assert hub.wrapper(path, "--control-process", "hourly") == 0
    assert (len(hub.runs(a)), len(hub.runs(b))) == (1, 1)


def test_a_schema_mapping_with_other_names_is_followed(hub, tmp_path):
    hub.sandbox.add_trackor_type("Job", fields={"J_NAME": {"type": "text"}, "J_ON": {"type": "checkbox"},
                                                "J_LAST": {"type": "datetime"}, "J_STDOUT": {"type": "checkbox"},
                                                "J_GROUP": {"type": "text"}})
    hub.sandbox.add_trackor_type("JobRun", parent="Job", fields={
        "JR_STATE": {"type": "dropdown", "values": ["Busy", "Good", "Bad"]}, "JR_FROM": {"type": "datetime"},
        "JR_TO": {"type": "datetime"}, "JR_FILE": {"type": "efile"}})
    hub.sandbox.add_trackor_type("JobLog", parent="JobRun", fields={
        "JL_AT": {"type": "datetime"}, "JL_KIND": {"type": "dropdown", "values": ["I", "W", "E"]},
        "JL_TEXT": {"type": "text"}, "JL_MORE": {"type": "memo"}, "JL_FILE": {"type": "efile"}})
    import requests
    requests.post(f"{hub.sandbox.url}/api/v3/trackor_types/Job/trackors", auth=hub.auth,
                  json={"fields": {"TRACKOR_KEY": "JOB-1", "J_NAME": "Renamed", "J_ON": 1, "J_STDOUT": 1}})
    schema = tmp_path / "Schema.json"
    schema.write_text(json.dumps({
        "integration": {"trackor_type": "Job", "name": "J_NAME", "enabled": "J_ON", "last_run": "J_LAST",
                        "read_from_stdout": "J_STDOUT", "control_process": "J_GROUP"},
        "run": {"trackor_type": "JobRun", "status": "JR_STATE", "start": "JR_FROM", "finish": "JR_TO",
                "file": "JR_FILE", "running": "Busy", "ok": "Good", "warnings": "Bad"},
        "log": {"trackor_type": "JobLog", "date_time": "JL_AT", "message_type": "JL_KIND", "message": "JL_TEXT",
                "description": "JL_MORE", "file": "JL_FILE", "info": "I", "warning": "W", "error": "E"}}))
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Renamed", "ExecutablePath": fixture_command(
        "says.py", "out:hello", "err:oops")}), "-s", str(schema))
    assert code == 0
    [run] = hub.sandbox.trackors("JobRun")
    assert run["JR_STATE"] == "Good" and run["JR_FROM"] and run["JR_TO"]
    logs = hub.sandbox.trackors("JobLog")
    # Two pipes: the order between stdout and stderr is not defined, only within each.
    assert sorted((r["JL_KIND"], r["JL_TEXT"]) for r in logs) == [("E", "oops"), ("I", "hello")]
    assert hub.sandbox.trackors("Job")[0]["J_LAST"] == run["JR_FROM"]


def test_the_hub_log_has_the_program_but_not_its_arguments_nor_the_password(hub):
    hub.add_integration("Secretive")
    hub.wrapper(hub.integrations_file({"IntegrationName": "Secretive",
                                       "ExecutablePath": fixture_command("says.py", "out:--token=hunter2")}))
    text = hub.hub_log()
    assert "program python" in text and "with 2 arguments" in text
    assert "hunter2" not in text and "sandbox-password" not in text


def test_the_real_script_runs_as_a_process(hub, repo_root):
    key = hub.add_integration("Process")
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file(
        {"IntegrationName": "Process", "ExecutablePath": fixture_command("says.py", "out:hi", "exit:2")}))
    assert done.returncode == 1, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert [r["IL_MESSAGE"] for r in hub.logs(only_run(hub, key)["TRACKOR_KEY"])] == ["hi", "Exit code 2"]


def test_a_run_onevizion_refuses_to_create_leaves_nothing_to_retry(hub, tmp_path, capsys):
    hub.add_integration("Misfit")
    schema = tmp_path / "Schema.json"
    schema.write_text(json.dumps({"run": {"status": "IR_NO_SUCH_FIELD"}}))
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Misfit", "ExecutablePath": "true"}),
                       "-s", str(schema))
    assert code == 2 and "check the 'run' section of the schema mapping" in capsys.readouterr().err
    assert hub.journal_rows("runs") == 0  # no later invocation adopts it and fails the same way
