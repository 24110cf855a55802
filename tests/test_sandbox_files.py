"""Electronic files in the sandbox: multipart upload, download, inline base64, file-name hygiene."""

import base64
from urllib.parse import quote

import pytest
import requests

import sandbox as sandbox_pkg

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)


@pytest.fixture
def run_id(sandbox):
    body = {"fields": {"TRACKOR_KEY": "RUN-1", "IR_STATUS": "Running"},
            "parents": [{"trackor_type": "Integration", "filter": {"TRACKOR_KEY": "INT-1"}}]}
    answer = requests.post(sandbox.url + "/api/v3/trackor_types/IntegrationRun/trackors", json=body, auth=AUTH)
    return answer.json()["TRACKOR_ID"]


def upload(sandbox, trackor_id, name, data, field="IR_FILE"):
    return requests.post(sandbox.url + "/api/v3/trackor/%d/file/%s" % (trackor_id, field),
                         params={"file_name": name}, files={"file": (name, data)}, auth=AUTH)


def test_upload_answers_a_bare_blob_id_and_download_returns_the_bytes(sandbox, run_id):
    data = bytes(range(256)) * 10
    answer = upload(sandbox, run_id, "report é.csv", data)
    assert answer.status_code == 200 and answer.text.strip().isdigit()
    got = requests.get(sandbox.url + "/api/v3/trackor/%d/file/IR_FILE" % run_id, auth=AUTH)
    assert got.status_code == 200 and got.content == data
    assert got.headers["Content-Disposition"] == "attachment; filename*=UTF-8''" + quote("report é.csv", safe="")


def test_download_of_an_empty_field_is_404(sandbox, run_id):
    assert requests.get(sandbox.url + "/api/v3/trackor/%d/file/IR_FILE" % run_id, auth=AUTH).status_code == 404


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\windows\\passwd", "/etc/passwd"])
def test_path_tricks_in_file_name_keep_only_the_base_name(sandbox, run_id, name):
    assert upload(sandbox, run_id, name, b"x").status_code == 200
    rows = sandbox.trackors("IntegrationRun")
    assert rows[0]["IR_FILE"]["file_name"] == "passwd"


def test_upload_to_a_missing_trackor_or_unknown_field_is_404(sandbox, run_id):
    assert upload(sandbox, 999999, "a.txt", b"x").status_code == 404
    assert upload(sandbox, run_id, "a.txt", b"x", field="NOPE").status_code == 404
    assert upload(sandbox, run_id, "a.txt", b"x", field="IR_STATUS").status_code == 400


def test_inline_base64_file_on_create_reads_back(sandbox, run_id):
    data = base64.b64encode(b"line 1\nline 2\n").decode()
    body = {"fields": {"TRACKOR_KEY": "L-1", "IL_MESSAGE_TYPE": "Info",
                       "IL_FILE": {"file_name": "out.txt", "data": data}},
            "parents": [{"trackor_type": "IntegrationRun", "filter": {"TRACKOR_KEY": "RUN-1"}}]}
    created = requests.post(sandbox.url + "/api/v3/trackor_types/IntegrationLog/trackors",
                            json=body, auth=AUTH).json()
    row = requests.get(sandbox.url + "/api/v3/trackors/%d?fields=IL_FILE" % created["TRACKOR_ID"],
                       auth=AUTH).json()
    assert row["IL_FILE"] == {"file_name": "out.txt", "data": data}
    got = requests.get(sandbox.url + "/api/v3/trackor/%d/file/IL_FILE" % created["TRACKOR_ID"], auth=AUTH)
    assert got.content == b"line 1\nline 2\n"


def test_inline_file_with_bad_base64_is_400(sandbox, run_id):
    answer = requests.put(sandbox.url + "/api/v3/trackors/%d" % run_id, auth=AUTH,
                          json={"IR_FILE": {"file_name": "a.txt", "data": "%%%"}})
    assert answer.status_code == 400 and "IR_FILE" in answer.text
