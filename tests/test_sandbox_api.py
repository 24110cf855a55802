"""The sandbox's REST API over real HTTP: auth, create, read, update, delete, value checks, errors."""

import json

import pytest
import requests

import sandbox as sandbox_pkg

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)


@pytest.fixture
def api(sandbox):
    """A requests.Session with Basic auth, and the base URL of the API."""
    session = requests.Session()
    session.auth = AUTH
    session.base = sandbox.url + "/api/v3"
    yield session
    session.close()


def create_run(api, key, integration="INT-1", **fields):
    body = {"fields": dict({"TRACKOR_KEY": key, "IR_STATUS": "Running",
                            "IR_START": "2024-05-01T10:00:00"}, **fields),
            "parents": [{"trackor_type": "Integration", "filter": {"TRACKOR_KEY": integration}}]}
    return api.post(api.base + "/trackor_types/IntegrationRun/trackors", json=body)


def create_log(api, key, run_key, **fields):
    body = {"fields": dict({"TRACKOR_KEY": key, "IL_MESSAGE_TYPE": "Info", "IL_MESSAGE": key}, **fields),
            "parents": [{"trackor_type": "IntegrationRun", "filter": {"TRACKOR_KEY": run_key}}]}
    return api.post(api.base + "/trackor_types/IntegrationLog/trackors", json=body)


def test_server_info_is_public(sandbox):
    answer = requests.get(sandbox.url + "/api/v3/server_info")
    assert answer.status_code == 200
    assert isinstance(answer.json()["version"], str)


@pytest.mark.parametrize("auth, status", [
    (AUTH, 200),
    ((sandbox_pkg.USER_NAME, "wrong"), 401),
    (None, 401),
])
def test_basic_auth(sandbox, auth, status):
    answer = requests.get(sandbox.url + "/api/authorize", auth=auth)
    assert answer.status_code == status
    if status == 401:
        assert answer.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("token, status", [
    ("%s:%s" % (sandbox_pkg.ACCESS_KEY, sandbox_pkg.SECRET_KEY), 200),
    ("%s:nope" % sandbox_pkg.ACCESS_KEY, 401),
])
def test_bearer_auth(sandbox, token, status):
    answer = requests.get(sandbox.url + "/api/v3/trackor_types/Integration/trackors",
                          headers={"Authorization": "Bearer " + token})
    assert answer.status_code == status


def test_seeded_integrations_follow_the_example_file(api, repo_root):
    with open(repo_root + "/Integration.example.json") as handle:
        names = [entry["IntegrationName"] for entry in json.load(handle)]
    answer = api.get(api.base + "/trackor_types/Integration/trackors",
                     params={"fields": "INT_NAME,INT_ENABLED,INT_READ_FROM_STDOUT,INT_DIRECTIONALITY"})
    rows = answer.json()
    assert [r["TRACKOR_KEY"] for r in rows] == ["INT-%d" % n for n in range(1, len(names) + 1)]
    assert [r["INT_NAME"] for r in rows] == names
    assert rows[0]["INT_ENABLED"] == "1" and rows[0]["INT_DIRECTIONALITY"] == "Inward"


def test_create_with_parent_answers_201_with_id_and_key(api):
    answer = create_run(api, "RUN-1")
    assert answer.status_code == 201
    body = answer.json()
    assert set(body) == {"TRACKOR_ID", "TRACKOR_KEY"}
    assert body["TRACKOR_KEY"] == "RUN-1" and isinstance(body["TRACKOR_ID"], int)


def test_create_without_key_generates_one(api):
    answer = api.post(api.base + "/trackor_types/Integration/trackors", json={"fields": {"INT_NAME": "x"}})
    assert answer.status_code == 201 and answer.json()["TRACKOR_KEY"]


def test_duplicate_key_is_400_text(api):
    assert create_run(api, "RUN-1").status_code == 201
    answer = create_run(api, "RUN-1")
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("text/plain") and "RUN-1" in answer.text


def test_missing_parent_is_404(api):
    assert create_run(api, "RUN-1", integration="INT-404").status_code == 404


def test_unknown_type_and_field_are_404(api):
    assert api.get(api.base + "/trackor_types/Nope/trackors").status_code == 404
    assert api.get(api.base + "/trackor_types/Integration/trackors?fields=NOPE").status_code == 404
    assert api.get(api.base + "/trackor_types/Integration/trackors?NOPE=1").status_code == 404
    answer = api.post(api.base + "/trackor_types/Integration/trackors", json={"fields": {"NOPE": "x"}})
    assert answer.status_code == 404 and answer.headers["Content-Type"].startswith("text/plain")


def test_read_filters_quoted_exact_and_by_parent(api):
    create_run(api, "RUN-1")
    create_run(api, "RUN-2", IR_STATUS="Executed with Warnings")
    create_run(api, "RUN-3", integration="INT-2")
    url = api.base + "/trackor_types/IntegrationRun/trackors"
    rows = api.get(url, params={"IR_STATUS": '"Running"', "Integration.TRACKOR_KEY": '"INT-1"',
                                "fields": "IR_STATUS,Integration.INT_NAME"}).json()
    assert rows == [{"TRACKOR_ID": rows[0]["TRACKOR_ID"], "TRACKOR_KEY": "RUN-1", "IR_STATUS": "Running",
                     "Integration.INT_NAME": "Example Daily Import"}]
    by_name = api.get(url, params={"Integration.INT_NAME": '"Example Nightly Export"'}).json()
    assert [r["TRACKOR_KEY"] for r in by_name] == ["RUN-3"]
    generic = api.get(url, params={"Parent.TRACKOR_KEY": "INT-2"}).json()
    assert [r["TRACKOR_KEY"] for r in generic] == ["RUN-3"]


def test_quoted_filter_is_exact_and_unquoted_is_a_contains_match(api):
    create_run(api, "RUN-1")
    create_run(api, "RUN-10")
    url = api.base + "/trackor_types/IntegrationRun/trackors"
    assert [r["TRACKOR_KEY"] for r in api.get(url, params={"TRACKOR_KEY": '"RUN-1"'}).json()] == ["RUN-1"]
    assert [r["TRACKOR_KEY"] for r in api.get(url, params={"TRACKOR_KEY": "run-1"}).json()] == ["RUN-1", "RUN-10"]


def parent_key(sandbox, run_key):
    return [r["_parent_key"] for r in sandbox.trackors("IntegrationRun") if r["TRACKOR_KEY"] == run_key][0]


def test_parent_filter_quoted_is_exact(api, sandbox):
    assert api.post(api.base + "/trackor_types/Integration/trackors",
                    json={"fields": {"TRACKOR_KEY": "X17"}}).status_code == 201
    assert create_run(api, "RUN-1", integration='"X17"').status_code == 201
    assert parent_key(sandbox, "RUN-1") == "X17"
    assert create_run(api, "RUN-2", integration='"X7"').status_code == 404
    assert create_run(api, "RUN-3", integration='"int-1"').status_code == 404  # exact is exact


def test_parent_filter_unquoted_is_contains_and_takes_the_oldest_match(api, sandbox):
    for key in ("X17", "X7", "X170"):
        assert api.post(api.base + "/trackor_types/Integration/trackors",
                        json={"fields": {"TRACKOR_KEY": key}}).status_code == 201
    assert create_run(api, "RUN-1", integration="7").status_code == 201
    assert parent_key(sandbox, "RUN-1") == "X17"  # not X7: the unquoted key was caught misfiling
    assert create_run(api, "RUN-2", integration="x7").status_code == 201
    assert parent_key(sandbox, "RUN-2") == "X7"  # any case, and the oldest of X7, X170
    assert create_run(api, "RUN-3", integration='"X7"').status_code == 201
    assert parent_key(sandbox, "RUN-3") == "X7"


def test_parent_filter_unquoted_matches_a_longer_key_alone(api, sandbox):
    assert api.post(api.base + "/trackor_types/Integration/trackors",
                    json={"fields": {"TRACKOR_KEY": "INT-17"}}).status_code == 201
    assert create_run(api, "RUN-1", integration="T-17").status_code == 201
    assert parent_key(sandbox, "RUN-1") == "INT-17"


def test_parent_filter_on_a_field_and_in_an_update_by_filter(api, sandbox):
    body = {"fields": {"TRACKOR_KEY": "RUN-1"},
            "parents": [{"trackor_type": "Integration", "filter": {"INT_NAME": "nightly"}}]}
    assert api.post(api.base + "/trackor_types/IntegrationRun/trackors", json=body).status_code == 201
    assert parent_key(sandbox, "RUN-1") == "INT-2"  # "Example Nightly Export"
    answer = api.put(api.base + "/trackor_types/IntegrationRun/trackors", params={"TRACKOR_KEY": '"RUN-1"'},
                     json={"fields": {}, "parents": [{"trackor_type": "Integration",
                                                      "filter": {"INT_NAME": '"Example Daily Import"'}}]})
    assert answer.status_code == 200 and parent_key(sandbox, "RUN-1") == "INT-1"


def test_read_names_are_case_insensitive_and_empty_values_null(api):
    create_run(api, "RUN-1")
    rows = api.get(api.base + "/trackor_types/integrationrun/trackors",
                   params={"ir_status": '"Running"', "fields": "ir_finish"}).json()
    assert rows[0]["IR_FINISH"] is None


def test_grandparent_fields_and_filters(api):
    create_run(api, "RUN-1")
    create_log(api, "RUN-1-000001", "RUN-1")
    rows = api.get(api.base + "/trackor_types/IntegrationLog/trackors",
                   params={"Integration.TRACKOR_KEY": '"INT-1"',
                           "fields": "IntegrationRun.TRACKOR_KEY,Integration.INT_NAME"}).json()
    assert rows[0]["IntegrationRun.TRACKOR_KEY"] == "RUN-1"
    assert rows[0]["Integration.INT_NAME"] == "Example Daily Import"


def test_checkbox_filter_accepts_1_and_quoted_1(api):
    url = api.base + "/trackor_types/Integration/trackors"
    assert len(api.get(url, params={"INT_ENABLED": "1"}).json()) == 2
    assert len(api.get(url, params={"INT_ENABLED": '"1"'}).json()) == 2
    assert api.get(url, params={"INT_ENABLED": "0"}).json() == []


def test_sort_paging_and_total_count(api):
    for n in range(1, 6):
        create_run(api, "RUN-%d" % n)
    url = api.base + "/trackor_types/IntegrationRun/trackors"
    answer = api.get(url, params={"sort": "TRACKOR_KEY:desc", "page": 2, "per_page": 2})
    assert answer.headers["X-Total-Count"] == "5"
    assert [r["TRACKOR_KEY"] for r in answer.json()] == ["RUN-3", "RUN-2"]
    assert api.get(url, params={"sort": "TRACKOR_KEY:sideways"}).status_code == 400


def test_read_one_and_missing_is_404(api):
    created = create_run(api, "RUN-1").json()
    answer = api.get(api.base + "/trackors/%d" % created["TRACKOR_ID"], params={"fields": "IR_STATUS"})
    assert answer.json() == dict(created, IR_STATUS="Running")
    assert api.get(api.base + "/trackors/999999").status_code == 404


def test_update_by_id_and_by_filter(api):
    created = create_run(api, "RUN-1").json()
    answer = api.put(api.base + "/trackors/%d" % created["TRACKOR_ID"],
                     json={"IR_STATUS": "Executed without Warnings", "IR_FINISH": "2024-05-01T10:05:00"})
    assert answer.status_code == 200 and answer.json() == created
    answer = api.put(api.base + "/trackor_types/IntegrationRun/trackors",
                     params={"TRACKOR_KEY": '"RUN-1"'}, json={"fields": {"IR_STATUS": "Executed with Warnings"}})
    assert answer.status_code == 200
    row = api.get(api.base + "/trackors/%d?fields=IR_STATUS,IR_FINISH" % created["TRACKOR_ID"]).json()
    assert row["IR_STATUS"] == "Executed with Warnings" and row["IR_FINISH"] == "2024-05-01T10:05:00"


def test_delete_by_trackor_id(api):
    created = create_run(api, "RUN-1").json()
    answer = api.delete(api.base + "/trackor_types/IntegrationRun/trackors",
                        params={"trackor_id": created["TRACKOR_ID"]})
    assert answer.status_code == 200 and answer.content == b""
    assert api.get(api.base + "/trackors/%d" % created["TRACKOR_ID"]).status_code == 404


@pytest.mark.parametrize("field, value", [
    ("IR_STATUS", "Finished"),
    ("IR_START", "2024-05-01 10:00:00"),
    ("IR_START", "2024-13-01T10:00:00"),
])
def test_bad_run_values_are_400_naming_the_field(api, field, value):
    answer = create_run(api, "RUN-1", **{field: value})
    assert answer.status_code == 400 and field in answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("field, value", [
    ("INT_ENABLED", "yes"),
    ("INT_ENABLED", 2),
    ("INT_NAME", "x" * 256),
    ("INT_DESCRIPTION", "x" * 65001),
])
def test_bad_integration_values_are_400_naming_the_field(api, field, value):
    answer = api.post(api.base + "/trackor_types/Integration/trackors", json={"fields": {field: value}})
    assert answer.status_code == 400 and field in answer.text


def test_log_message_limits(api):
    create_run(api, "RUN-1")
    assert create_log(api, "L-1", "RUN-1", IL_MESSAGE="m" * 256).status_code == 400
    ok = create_log(api, "L-2", "RUN-1", IL_MESSAGE="m" * 255, IL_DESCRIPTION="d" * 65000)
    assert ok.status_code == 201


@pytest.mark.parametrize("value", [1, 0, "1", "0", True, False])
def test_checkbox_accepts_its_spellings(api, value):
    answer = api.post(api.base + "/trackor_types/Integration/trackors", json={"fields": {"INT_ENABLED": value}})
    assert answer.status_code == 201


def test_malformed_json_is_400(api):
    answer = api.post(api.base + "/trackor_types/Integration/trackors", data=b"{not json",
                      headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.headers["Content-Type"].startswith("text/plain")


def test_wrong_content_type_is_refused(api):
    answer = api.post(api.base + "/trackor_types/Integration/trackors", data=b"fields=1",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code in (400, 415)


def test_oversized_body_is_413(api):
    from sandbox.server import MAX_BODY
    answer = api.post(api.base + "/trackor_types/Integration/trackors", data=b"x" * (MAX_BODY + 1),
                      headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_session_reuses_one_connection_and_a_big_create_is_fast(api, sandbox):
    import time
    create_run(api, "RUN-1")
    started = time.perf_counter()
    for n in range(20):
        assert create_log(api, "L-%d" % n, "RUN-1", IL_DESCRIPTION="d" * 65000).status_code == 201
    assert (time.perf_counter() - started) / 20 < 0.05
    assert len(sandbox.server.connections) == 1


def test_renamed_schema_via_control_api(sandbox, api):
    spec = {"name": "MyRun", "parent": "Integration",
            "fields": {"MR_STATE": {"type": "dropdown", "values": ["Go", "Done"]}, "MR_AT": "datetime"}}
    assert requests.post(sandbox.url + "/_sandbox/trackor_types", json=spec).status_code == 201
    body = {"fields": {"MR_STATE": "Go", "MR_AT": "2024-01-01T00:00:00"},
            "parents": [{"trackor_type": "Integration", "filter": {"TRACKOR_KEY": "INT-1"}}]}
    assert api.post(api.base + "/trackor_types/MyRun/trackors", json=body).status_code == 201
    body["fields"]["MR_STATE"] = "Running"
    assert api.post(api.base + "/trackor_types/MyRun/trackors", json=body).status_code == 400
    rows = requests.get(sandbox.url + "/_sandbox/trackors/MyRun").json()
    assert rows[0]["MR_STATE"] == "Go" and rows[0]["_parent_key"] == "INT-1"
    assert isinstance(rows[0]["_created_at"], float)
