"""The sandbox's control API and the shared test helpers."""

import json
import os
import stat

import requests

import sandbox as sandbox_pkg
from tests.conftest import write_passwords

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)


def test_control_trackors_lists_everything_in_id_order_with_creation_time(sandbox):
    rows = requests.get(sandbox.url + "/_sandbox/trackors/integration").json()
    assert [r["TRACKOR_ID"] for r in rows] == sorted(r["TRACKOR_ID"] for r in rows)
    assert rows[0]["INT_CONTROL_PROCESS"] == "examples" and rows[0]["_parent_id"] is None
    assert rows[0]["_created_at"] <= rows[1]["_created_at"]
    assert requests.get(sandbox.url + "/_sandbox/trackors/Nope").status_code == 404


def test_reset_wipes_and_seeds_again(sandbox):
    requests.post(sandbox.url + "/api/v3/trackor_types/Integration/trackors", auth=AUTH,
                  json={"fields": {"TRACKOR_KEY": "X"}})
    assert requests.post(sandbox.url + "/_sandbox/reset").status_code == 200
    assert [r["TRACKOR_KEY"] for r in sandbox.trackors("Integration")] == ["INT-1", "INT-2"]


def test_deleting_a_parent_deletes_its_children(sandbox):
    parent = [{"trackor_type": "Integration", "filter": {"TRACKOR_KEY": "INT-1"}}]
    requests.post(sandbox.url + "/api/v3/trackor_types/IntegrationRun/trackors", auth=AUTH,
                  json={"fields": {"TRACKOR_KEY": "R"}, "parents": parent})
    answer = requests.delete(sandbox.url + "/api/v3/trackor_types/Integration/trackors",
                             params={"TRACKOR_KEY": '"INT-1"'}, auth=AUTH)
    assert answer.status_code == 200 and sandbox.trackors("IntegrationRun") == []


def test_unknown_body_property_is_400(sandbox):
    answer = requests.post(sandbox.url + "/api/v3/trackor_types/Integration/trackors", auth=AUTH,
                           json={"INT_NAME": "flat fields are not a create body"})
    assert answer.status_code == 400


def test_write_passwords_writes_a_private_file(tmp_path, sandbox):
    path = write_passwords(tmp_path, sandbox.url, Password=None, AccessKey=sandbox_pkg.ACCESS_KEY,
                           SecretKey=sandbox_pkg.SECRET_KEY)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as handle:
        section = json.load(handle)["installation"]
    assert section == {"URL": sandbox.url, "UserName": sandbox_pkg.USER_NAME,
                       "AccessKey": sandbox_pkg.ACCESS_KEY, "SecretKey": sandbox_pkg.SECRET_KEY}


def test_credentials_come_from_the_example_passwords_file(repo_root):
    with open(os.path.join(repo_root, "Passwords.example.json")) as handle:
        section = json.load(handle)["installation"]
    assert (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD) == (section["UserName"], section["Password"])
    assert len(sandbox_pkg.ACCESS_KEY) == 20 and len(sandbox_pkg.SECRET_KEY) == 70
