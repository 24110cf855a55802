"""The schema and system endpoints over real HTTP, and a sandbox whose schema is wrong in chosen ways."""

import re
import signal
import sqlite3
import subprocess
import sys
import time
import types

import pytest
import requests

import sandbox as sandbox_pkg
from sandbox.schema import SandboxError
from sandbox.server import start_in_thread
from sandbox.store import Store

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)
STATUSES = ["Running", "Executed without Warnings", "Executed with Warnings"]


@pytest.fixture
def wrong():
    """A sandbox with every kind of wrong schema at once."""
    handle = start_in_thread(
        drop_fields=["IL_FILE"], field_types={"IL_MESSAGE": "Memo"},
        drop_values={"IR_STATUS": ["Executed without Warnings"]},
        mandatory_fields=["IntegrationRun.IR_APPROVER", "IL_MESSAGE_TYPE"],
        autogen_keys=["IntegrationRun"], labels={"IntegrationLog": "Integration Log", "IR_START": "Started"},
        field_lengths={"IL_DESCRIPTION": 100}, timezone="Asia/Kolkata")
    try:
        yield handle
    finally:
        handle.stop()


def get(sandbox, path, **params):
    answer = requests.get(sandbox.url + path, auth=AUTH, params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    return answer.json()


def fields_of(sandbox, *types, **params):
    return {f["name"]: f for f in get(sandbox, "/api/v3/schema/fields", trackor_types=list(types), **params)}


def create(sandbox, type_name, fields, parent=None):
    body = {"fields": fields}
    if parent:
        body["parents"] = [{"trackor_type": parent[0], "filter": {"TRACKOR_KEY": '"%s"' % parent[1]}}]
    return requests.post("%s/api/v3/trackor_types/%s/trackors" % (sandbox.url, type_name), json=body, auth=AUTH)


# -- the endpoints, default schema -------------------------------------------------------------------
def test_authorize_is_text(sandbox):
    answer = requests.get(sandbox.url + "/api/authorize", auth=AUTH)
    assert answer.status_code == 200 and answer.text == "Authorization succeeded"
    assert answer.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("kwargs, reason", [
    ({"auth": (sandbox_pkg.USER_NAME, "wrong")}, "wrong user name or password"),
    ({}, "no credentials"),
    ({"headers": {"Authorization": "Bearer %s:nope" % sandbox_pkg.ACCESS_KEY}}, "wrong access key or secret key"),
])
def test_authorize_401_says_why_and_never_echoes(sandbox, kwargs, reason):
    answer = requests.get(sandbox.url + "/api/authorize", **kwargs)
    assert answer.status_code == 401 and reason in answer.text
    assert "nope" not in answer.text and "wrong\n" not in answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")


def test_schema_trackor_types(sandbox):
    types = get(sandbox, "/api/v3/schema/trackor_types")
    assert [(t["name"], t["label"], t["prefix"]) for t in types] == [
        ("Integration", "Integration", "INT:"), ("IntegrationRun", "Integration Run", "IR:"),
        ("IntegrationLog", "Log", "IL:")]
    assert [t["relations"] for t in types] == [
        {"children": ["IntegrationRun"], "parents": []},
        {"children": ["IntegrationLog"], "parents": ["Integration"]},
        {"children": [], "parents": ["IntegrationRun"]}]
    assert all(isinstance(t["id"], int) for t in types) and len({t["id"] for t in types}) == 3
    assert not any("autogen_trackor_key" in t for t in types)  # the default types do not generate keys


def test_schema_fields_of_the_default_types(sandbox):
    fields = fields_of(sandbox, "Integration", "IntegrationRun", "IntegrationLog")
    assert {name: f["type"] for name, f in fields.items()} == {
        "INT_NAME": "Text", "INT_CONTROL_PROCESS": "Text", "INT_DIRECTIONALITY": "Drop-Down",
        "INT_ENABLED": "Checkbox", "INT_LAST_RUN": "Date/Time", "INT_EXTERNAL_SYSTEM": "Text",
        "INT_LAST_MODIFIED_DATE": "Date/Time", "INT_DESCRIPTION": "Memo", "INT_READ_FROM_STDOUT": "Checkbox",
        "IR_STATUS": "Drop-Down", "IR_START": "Date/Time", "IR_FINISH": "Date/Time", "IR_FILE": "Electronic File",
        "IL_DATE_TIME": "Date/Time", "IL_MESSAGE_TYPE": "Drop-Down", "IL_MESSAGE": "Text", "IL_DESCRIPTION": "Memo",
        "IL_FILE": "Electronic File"}
    status = fields["IR_STATUS"]
    assert status["label"] == "Status" and status["required"] is False
    assert status["field_trackor_type"]["name"] == "IntegrationRun"
    assert status["dropdown_values"] == [{"value": v, "label": v} for v in STATUSES]
    assert "dropdown_values" not in fields["IL_MESSAGE"]
    assert fields["INT_READ_FROM_STDOUT"]["label"] == "Read From STDOUT"
    assert len({f["id"] for f in fields.values()}) == len(fields)


def test_schema_fields_names_any_case_and_fields_filter(sandbox):
    fields = fields_of(sandbox, "integrationlog", fields="il_message,IL_FILE,NOPE")
    assert list(fields) == ["IL_MESSAGE", "IL_FILE"]
    assert fields["IL_MESSAGE"]["field_trackor_type"]["name"] == "IntegrationLog"
    repeated = get(sandbox, "/api/v3/schema/fields", trackor_types="IntegrationLog", fields=["IL_FILE", "IL_MESSAGE"])
    assert [f["name"] for f in repeated] == ["IL_MESSAGE", "IL_FILE"]


@pytest.mark.parametrize("params, status", [
    ({}, 400),
    ({"trackor_types": "Nope"}, 404),
    ({"trackor_types": "Integration,IntegrationRun"}, 404),  # repeated, not a comma list
])
def test_schema_fields_refusals(sandbox, params, status):
    answer = requests.get(sandbox.url + "/api/v3/schema/fields", auth=AUTH, params=params)
    assert answer.status_code == status and answer.headers["Content-Type"].startswith("text/plain")


def test_trackor_types_and_one_type(sandbox):
    assert get(sandbox, "/api/v3/trackor_types") == [
        {"id": t["id"], "name": t["name"], "label": t["label"], "prefix": t["prefix"]}
        for t in get(sandbox, "/api/v3/schema/trackor_types")]
    specs = get(sandbox, "/api/v3/trackor_types/integrationrun")
    assert specs == [{"name": "IR_STATUS", "label": "Status", "data_type": "DROP_DOWN", "mandatory": False},
                     {"name": "IR_START", "label": "Start", "data_type": "DATE_TIME", "mandatory": False},
                     {"name": "IR_FINISH", "label": "Finish", "data_type": "DATE_TIME", "mandatory": False},
                     {"name": "IR_FILE", "label": "File", "data_type": "ELECTRONIC_FILE", "mandatory": False}]
    assert requests.get(sandbox.url + "/api/v3/trackor_types/Nope", auth=AUTH).status_code == 404


def test_parents_and_children(sandbox):
    parents = get(sandbox, "/api/v3/trackor_types/IntegrationLog/parents")
    assert [p["name"] for p in parents] == ["IntegrationRun"]
    assert parents[0]["relation_type"] == "ONE_TO_MANY" and parents[0]["label"] == "Integration Run"
    assert [p["name"] for p in parents[0]["children"]] == ["Integration"]  # and further up
    assert set(parents[0]) == {"trackor_type_id", "relation_type_id", "name", "label", "prefix",
                               "relation_type", "children"}
    children = get(sandbox, "/api/v3/trackor_types/integration/children")
    assert [c["name"] for c in children] == ["IntegrationRun"]
    assert [c["name"] for c in children[0]["children"]] == ["IntegrationLog"]
    assert children[0]["relation_type_id"] == parents[0]["children"][0]["relation_type_id"]
    assert get(sandbox, "/api/v3/trackor_types/Integration/parents") == []
    assert get(sandbox, "/api/v3/trackor_types/IntegrationLog/children") == []


def test_primary_timezone(sandbox):
    param = get(sandbox, "/api/v3/params/system/PrimaryTimezone")
    assert param["name"] == "PrimaryTimezone" and param["value"] == "America/New_York"
    assert set(param) == {"name", "data_type", "value", "description", "group"}
    assert get(sandbox, "/api/v3/params/system/primarytimezone")["name"] == "PrimaryTimezone"
    missing = requests.get(sandbox.url + "/api/v3/params/system/NoSuchParam", auth=AUTH)
    assert missing.status_code == 404 and "NoSuchParam" in missing.text


@pytest.mark.parametrize("path", ["/api/v3/schema/trackor_types", "/api/v3/schema/fields?trackor_types=Integration",
                                  "/api/v3/trackor_types", "/api/v3/trackor_types/Integration",
                                  "/api/v3/trackor_types/Integration/children",
                                  "/api/v3/params/system/PrimaryTimezone"])
def test_schema_endpoints_need_auth_and_are_counted(sandbox, path):
    assert requests.get(sandbox.url + path).status_code == 401
    assert requests.get(sandbox.url + path, auth=AUTH).status_code == 200
    assert sandbox.stats()["schema"] == 1 and sandbox.stats()["auth_failed"] == 1


def test_a_type_added_at_run_time_is_in_the_schema(sandbox):
    spec = {"name": "MyRun", "parent": "Integration", "label": "My Runs",
            "fields": {"MR_STATE": {"type": "Drop-Down", "values": ["Go"], "label": "State", "required": True},
                       "MR_AT": "Date/Time"}}
    assert requests.post(sandbox.url + "/_sandbox/trackor_types", json=spec).status_code == 201
    fields = fields_of(sandbox, "MyRun")
    assert fields["MR_STATE"]["required"] is True and fields["MR_STATE"]["label"] == "State"
    assert fields["MR_AT"]["type"] == "Date/Time" and fields["MR_AT"]["label"] == "At"
    types = {t["name"]: t for t in get(sandbox, "/api/v3/schema/trackor_types")}
    assert types["MyRun"]["label"] == "My Runs" and types["MyRun"]["prefix"] == "MR:"
    assert "MyRun" in types["Integration"]["relations"]["children"]
    answer = create(sandbox, "MyRun", {"MR_AT": "2024-01-01T00:00:00"}, ("Integration", "INT-1"))
    assert answer.status_code == 400 and "MR_STATE" in answer.text


# -- a schema wrong in chosen ways ----------------------------------------------------------------------
def test_wrong_schema_shows_in_the_schema_endpoints(wrong):
    fields = fields_of(wrong, "IntegrationRun", "IntegrationLog")
    assert "IL_FILE" not in fields
    assert fields["IL_MESSAGE"]["type"] == "Memo"
    assert [v["value"] for v in fields["IR_STATUS"]["dropdown_values"]] == ["Running", "Executed with Warnings"]
    assert fields["IR_APPROVER"]["required"] is True and fields["IR_APPROVER"]["type"] == "Text"
    assert fields["IL_MESSAGE_TYPE"]["required"] is True and fields["IR_STATUS"]["required"] is False
    assert fields["IR_START"]["label"] == "Started"
    types = {t["name"]: t for t in get(wrong, "/api/v3/schema/trackor_types")}
    assert types["IntegrationRun"]["autogen_trackor_key"].startswith("IR-")
    assert "autogen_trackor_key" not in types["IntegrationLog"]
    assert types["IntegrationLog"]["label"] == "Integration Log"
    specs = {f["name"]: f for f in get(wrong, "/api/v3/trackor_types/IntegrationLog")}
    assert specs["IL_MESSAGE"]["data_type"] == "MEMO" and specs["IL_MESSAGE_TYPE"]["mandatory"] is True
    assert get(wrong, "/api/v3/params/system/PrimaryTimezone")["value"] == "Asia/Kolkata"


def test_wrong_schema_is_enforced_by_the_api(wrong):
    run = {"TRACKOR_KEY": "RUN-1", "IR_STATUS": "Running", "IR_START": "2024-05-01T10:00:00"}
    missing = create(wrong, "IntegrationRun", run, ("Integration", "INT-1"))
    assert missing.status_code == 400 and "IR_APPROVER" in missing.text
    refused = create(wrong, "IntegrationRun", dict(run, IR_APPROVER="me", IR_STATUS="Executed without Warnings"),
                     ("Integration", "INT-1"))
    assert refused.status_code == 400 and "IR_STATUS" in refused.text
    created = create(wrong, "IntegrationRun", dict(run, IR_APPROVER="me"), ("Integration", "INT-1"))
    assert created.status_code == 201
    body = created.json()
    assert body["TRACKOR_KEY"] == "IR-%06d" % body["TRACKOR_ID"]  # the given RUN-1 was replaced
    assert requests.get(wrong.url + "/api/v3/trackor_types/IntegrationRun/trackors", auth=AUTH,
                        params={"TRACKOR_KEY": '"RUN-1"'}).json() == []
    emptied = requests.put("%s/api/v3/trackors/%d" % (wrong.url, body["TRACKOR_ID"]), auth=AUTH,
                           json={"IR_APPROVER": ""})
    assert emptied.status_code == 400 and "IR_APPROVER" in emptied.text
    log = {"TRACKOR_KEY": "L-1", "IL_MESSAGE_TYPE": "Info", "IL_MESSAGE": "m" * 300}
    parent = ("IntegrationRun", body["TRACKOR_KEY"])
    assert create(wrong, "IntegrationLog", log, parent).status_code == 201  # a Memo: longer than 255 is fine
    no_type = create(wrong, "IntegrationLog", {"TRACKOR_KEY": "L-2", "IL_MESSAGE": "m"}, parent)
    assert no_type.status_code == 400 and "IL_MESSAGE_TYPE" in no_type.text
    long = create(wrong, "IntegrationLog", dict(log, TRACKOR_KEY="L-3", IL_DESCRIPTION="d" * 101), parent)
    assert long.status_code == 400 and "IL_DESCRIPTION" in long.text
    dropped = create(wrong, "IntegrationLog", dict(log, TRACKOR_KEY="L-4",
                                                  IL_FILE={"file_name": "a.txt", "data": "YQ=="}), parent)
    assert dropped.status_code == 404 and "IL_FILE" in dropped.text
    log_id = [r for r in wrong.trackors("IntegrationLog") if r["TRACKOR_KEY"] == "L-1"][0]["TRACKOR_ID"]
    upload = requests.post("%s/api/v3/trackor/%d/file/IL_FILE" % (wrong.url, log_id), auth=AUTH,
                           files={"file": ("a.txt", b"a")})
    assert upload.status_code == 404
    assert requests.get(wrong.url + "/api/v3/trackor_types/IntegrationLog/trackors", auth=AUTH,
                        params={"fields": "IL_FILE"}).status_code == 404
    assert requests.get(wrong.url + "/").status_code == 200  # the page copes


def test_field_length_on_a_text_field():
    with start_in_thread(field_lengths={"IL_MESSAGE": 100}) as handle:
        assert create(handle, "IntegrationRun", {"TRACKOR_KEY": "R"}, ("Integration", "INT-1")).status_code == 201
        ok = create(handle, "IntegrationLog", {"TRACKOR_KEY": "L-1", "IL_MESSAGE": "m" * 100}, ("IntegrationRun", "R"))
        assert ok.status_code == 201
        long = create(handle, "IntegrationLog", {"TRACKOR_KEY": "L-2", "IL_MESSAGE": "m" * 101}, ("IntegrationRun", "R"))
        assert long.status_code == 400 and "IL_MESSAGE" in long.text and "100" in long.text


def test_autogen_keys_with_a_prefix_of_ones_own():
    with start_in_thread(autogen_keys={"IntegrationLog": "LOG-", "Integration": None}) as handle:
        assert create(handle, "IntegrationRun", {"TRACKOR_KEY": "R"}, ("Integration", "INT-1")).status_code == 201
        body = create(handle, "IntegrationLog", {"TRACKOR_KEY": "R-000001"}, ("IntegrationRun", "R")).json()
        assert body["TRACKOR_KEY"] == "LOG-%06d" % body["TRACKOR_ID"]
        made = create(handle, "Integration", {"INT_NAME": "no key given"}).json()
        assert made["TRACKOR_KEY"] == "INT-%06d" % made["TRACKOR_ID"]  # the type's prefix, without ':'
        assert [r["TRACKOR_KEY"] for r in handle.trackors("Integration")][:2] == ["INT-1", "INT-2"]  # the seed


def test_schema_changes_at_run_time(sandbox):
    url = sandbox.url + "/_sandbox/schema"
    assert requests.get(url).json()["timezone"] == "America/New_York"
    changed = requests.post(url, json={"drop_fields": ["IL_FILE"], "timezone": "Europe/Berlin"}).json()
    assert changed["drop_fields"] == ["IL_FILE"] and changed["timezone"] == "Europe/Berlin"
    merged = requests.post(url, json={"autogen_keys": ["IntegrationRun"]}).json()
    assert merged["drop_fields"] == ["IL_FILE"] and merged["autogen_keys"] == {"IntegrationRun": None}
    assert "IL_FILE" not in fields_of(sandbox, "IntegrationLog")
    assert get(sandbox, "/api/v3/params/system/PrimaryTimezone")["value"] == "Europe/Berlin"
    assert requests.post(url, json={"drop_fields": []}).json()["drop_fields"] is None
    assert "IL_FILE" in fields_of(sandbox, "IntegrationLog")
    cleared = requests.delete(url).json()
    assert cleared["autogen_keys"] is None and cleared["timezone"] == "America/New_York"
    sandbox.set_schema(mandatory_fields=["IntegrationRun.IR_APPROVER"])
    assert fields_of(sandbox, "IntegrationRun")["IR_APPROVER"]["required"] is True
    sandbox.clear_schema()
    assert "IR_APPROVER" not in fields_of(sandbox, "IntegrationRun")


@pytest.mark.parametrize("settings, named", [
    ({"drop_feilds": ["IL_FILE"]}, "drop_feilds"),
    ({"drop_fields": ["IL_NOPE"]}, "IL_NOPE"),
    ({"field_types": {"IL_MESSAGE": "Rich Text"}}, "field_types"),
    ({"field_types": {"IL_MESSAGE": "Drop-Down"}}, "IL_MESSAGE"),
    ({"drop_values": {"IR_STATUS": ["Finished"]}}, "Finished"),
    ({"drop_values": {"IL_MESSAGE": ["x"]}}, "drop_values"),
    ({"mandatory_fields": ["IR_APPROVER"]}, "Type.FIELD"),
    ({"mandatory_fields": ["Nope.X"]}, "Nope"),
    ({"autogen_keys": ["Nope"]}, "Nope"),
    ({"labels": {"Nope": "x"}}, "Nope"),
    ({"labels": {"IL_MESSAGE": ""}}, "labels"),
    ({"field_lengths": {"IL_MESSAGE": 0}}, "field_lengths"),
    ({"field_lengths": {"IR_STATUS": 10}}, "IR_STATUS"),
    ({"timezone": "Mars/Olympus"}, "Mars/Olympus"),
])
def test_a_bad_schema_setting_is_a_400_and_changes_nothing(sandbox, settings, named):
    before = requests.get(sandbox.url + "/_sandbox/schema").json()
    answer = requests.post(sandbox.url + "/_sandbox/schema", json=settings)
    assert answer.status_code == 400 and named in answer.text, answer.text
    assert requests.get(sandbox.url + "/_sandbox/schema").json() == before
    with pytest.raises(SandboxError):  # the same at start
        Store(":memory:", None, settings)


def test_a_variant_added_field_survives_restarts_of_a_file_database(tmp_path):
    db = str(tmp_path / "sandbox.db")
    with start_in_thread(db=db, mandatory_fields=["IntegrationRun.IR_APPROVER"]) as handle:
        assert create(handle, "IntegrationRun", {"TRACKOR_KEY": "R", "IR_APPROVER": "me"},
                      ("Integration", "INT-1")).status_code == 201
    with start_in_thread(db=db) as handle:  # the configured schema again
        assert "IR_APPROVER" not in fields_of(handle, "IntegrationRun")
    with start_in_thread(db=db, mandatory_fields=["IntegrationRun.IR_APPROVER"]) as handle:
        assert handle.trackors("IntegrationRun")[0]["IR_APPROVER"] == "me"


def test_a_database_of_an_older_sandbox_opens(tmp_path):
    db = str(tmp_path / "old.db")
    with sqlite3.connect(db) as old:
        old.executescript("""
            CREATE TABLE types (lname TEXT PRIMARY KEY, name TEXT, parent TEXT, pos INTEGER);
            CREATE TABLE fields (ltype TEXT, name TEXT, ftype TEXT, vals TEXT, max_length INTEGER,
                pos INTEGER, PRIMARY KEY (ltype, name));
            INSERT INTO types VALUES ('myrun', 'MyRun', NULL, 0);
            INSERT INTO fields VALUES ('myrun', 'MR_STATE', 'text', '[]', 255, 0);
            CREATE TABLE data_myrun (trackor_id INTEGER PRIMARY KEY, "MR_STATE" TEXT);""")
    old.close()
    store = Store(db)
    try:
        described = store.describe()
        assert described[0]["label"] == "My Run" and described[0]["fields"]["MR_STATE"]["label"] == "State"
    finally:
        store.close()


def start_process(repo_root, *flags):
    process = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--db", ":memory:"] + list(flags),
                               cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process


def test_schema_flags_of_the_process(repo_root):
    started = time.monotonic()
    process = start_process(repo_root, "--drop-field", "IL_FILE", "--field-type", "IL_MESSAGE=Memo",
                            "--drop-value", "IR_STATUS=Executed without Warnings",
                            "--drop-value", "IR_STATUS=Executed with Warnings",
                            "--mandatory-field", "IntegrationRun.IR_APPROVER", "--autogen-keys", "IntegrationRun",
                            "--autogen-keys", "IntegrationLog=LOG-", "--label", "IntegrationRun=Runs",
                            "--field-length", "IL_DESCRIPTION=500", "--timezone", "Europe/Berlin")
    try:
        line = process.stdout.readline()
        assert time.monotonic() - started < 2.0
        url = re.search(r"http://[\d.]+:\d+", line).group(0)
        handle = types.SimpleNamespace(url=url)
        fields = fields_of(handle, "IntegrationRun", "IntegrationLog")
        assert "IL_FILE" not in fields and fields["IL_MESSAGE"]["type"] == "Memo"
        assert [v["value"] for v in fields["IR_STATUS"]["dropdown_values"]] == ["Running"]
        assert fields["IR_APPROVER"]["required"] is True
        served = {t["name"]: t for t in get(handle, "/api/v3/schema/trackor_types")}
        assert served["IntegrationRun"]["label"] == "Runs"
        assert served["IntegrationLog"]["autogen_trackor_key"].startswith("LOG-")
        assert get(handle, "/api/v3/params/system/PrimaryTimezone")["value"] == "Europe/Berlin"
        settings = requests.get(url + "/_sandbox/schema").json()
        assert settings["field_lengths"] == {"IL_DESCRIPTION": 500}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize("flags, named", [
    (["--drop-field", "IL_NOPE"], "IL_NOPE"),
    (["--field-type", "IL_MESSAGE"], "--field-type"),
    (["--field-length", "IL_MESSAGE=long"], "--field-length"),
    (["--timezone", "Nowhere/Special"], "Nowhere/Special"),
])
def test_a_bad_schema_flag_is_exit_2_with_a_message(repo_root, flags, named):
    process = start_process(repo_root, *flags)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 2 and named in err and "Traceback" not in err
    assert out == ""


def test_the_sandbox_still_starts_quickly(repo_root):
    timings = []
    for _ in range(3):
        started = time.monotonic()
        process = start_process(repo_root)
        process.stdout.readline()
        timings.append(time.monotonic() - started)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=5)
        process.stdout.close()
        process.stderr.close()
    assert min(timings) < 0.5, timings
