"""Bad requests to the sandbox that tests/test_sandbox_*.py do not already cover (malformed JSON,
415, 413 with Content-Length, path tricks in file names are there): each gets a text/plain 4xx
naming the problem, never a 500, a traceback or a hang.
"""

from __future__ import annotations

import socket

import pytest
import requests

import sandbox as sandbox_pkg

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def base(sandbox):
    return sandbox.url + "/api/v3"


@pytest.fixture
def run_id(base):
    answer = requests.post(base + "/trackor_types/IntegrationRun/trackors", auth=AUTH, json={
        "fields": {"TRACKOR_KEY": "R-1"}, "parents": [{"trackor_type": "Integration", "filter": {"TRACKOR_KEY": "INT-1"}}]})
    assert answer.status_code == 201, answer.text
    return answer.json()["TRACKOR_ID"]


CREATE = "/trackor_types/Integration/trackors"


@pytest.mark.parametrize("method, path, body, headers, status, part", [
    ("POST", CREATE, b"[1, 2]", JSON, 400, "must be a JSON object"),
    ("POST", CREATE, b'{"fields": {"INT_NAME": "caf\xe9"}}', JSON, 400, "Malformed JSON"),
    ("POST", CREATE, b'{"fields": {"INT_NAME": NaN}}', JSON, 400, "NaN is not a JSON value"),
    ("POST", CREATE, b'{"fields": {"INT_NAME": -Infinity}}', JSON, 400, "Malformed JSON"),
    ("POST", CREATE, b"[" * 100000 + b"]" * 100000, JSON, 400, "nested too deeply"),
    ("POST", CREATE, b'{"fields": [1]}', JSON, 400, "'fields' must be an object"),
    ("POST", CREATE, b'{"fields": {}, "parents": [5]}', JSON, 400, "'parents'"),
    ("POST", CREATE, b'{"INT_NAME": "flat"}', JSON, 400, "Unknown properties in the body"),
    ("POST", CREATE, b"", JSON, 400, "Malformed JSON"),
    ("PUT", "/trackors/1", b"[1]", JSON, 400, "must be a JSON object of fields"),
    ("PUT", "/trackors/1", b"{}", {"Content-Type": "text/plain"}, 415, "Content-Type must be application/json"),
    ("PUT", "/trackors/abc", b"{}", JSON, 404, "No such API endpoint"),
    ("PATCH", "/trackors/1", b"{}", JSON, 405, "Method PATCH not allowed"),
])
def test_bad_bodies_are_a_text_4xx_naming_the_problem(sandbox, base, method, path, body, headers, status, part):
    answer = requests.request(method, base + path, data=body, headers=headers, auth=AUTH, timeout=10)
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert part in answer.text
    assert not sandbox.trackors("Integration") or all(r["INT_NAME"] != "flat" for r in sandbox.trackors("Integration"))


def test_an_oversized_chunked_body_is_413(base, monkeypatch):
    import sandbox.server
    monkeypatch.setattr(sandbox.server, "MAX_BODY", 20 << 20)   # the limit itself is 128 MiB: too slow to send
    chunks = (b"x" * (1 << 20) for _ in range(21))
    answer = requests.post(base + CREATE, data=chunks, headers=JSON, auth=AUTH, timeout=30)
    assert answer.status_code == 413 and "larger than" in answer.text


@pytest.mark.parametrize("head", [
    b"Content-Length: abc\r\n",
    b"Content-Length: -5\r\n",
    b"Transfer-Encoding: chunked\r\n\r\nzz",
])
def test_a_malformed_framing_is_400_and_the_connection_closes(sandbox, head):
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as conn:
        conn.sendall(b"POST /api/v3" + CREATE.encode() + b" HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
        answer = b""
        while True:
            data = conn.recv(4096)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"Connection: close" in answer


@pytest.mark.parametrize("data, headers, part", [
    (b"abc", {"Content-Type": "multipart/form-data"}, "without a boundary"),
    (b'{"a": 1}', JSON, "Expected multipart/form-data, got application/json"),
    (b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc', {"Content-Type": "multipart/form-data; boundary=B"},
     "Malformed multipart body"),
    (b'--B\r\nContent-Disposition: form-data; name="other"; filename="a"\r\n\r\nabc\r\n--B--\r\n',
     {"Content-Type": "multipart/form-data; boundary=B"}, "needs a part named 'file'"),
])
def test_a_bad_upload_is_400(sandbox, base, run_id, data, headers, part):
    answer = requests.post(base + "/trackor/%d/file/IR_FILE" % run_id, data=data, headers=headers, auth=AUTH)
    assert answer.status_code == 400 and part in answer.text, answer.text
    assert not sandbox.trackors("IntegrationRun")[0]["IR_FILE"]


@pytest.mark.parametrize("name, stored", [
    ("..", "file"), (".", "file"), ("a\x00b.txt", "ab.txt"), ("dir/../..", "file"), ("C:\\x\\..\\r.csv", "r.csv"),
])
def test_more_file_name_tricks_keep_a_safe_base_name(sandbox, base, run_id, name, stored):
    answer = requests.post(base + "/trackor/%d/file/IR_FILE" % run_id, params={"file_name": name},
                           files={"file": ("f", b"x")}, auth=AUTH)
    assert answer.status_code == 200, answer.text
    assert sandbox.trackors("IntegrationRun")[0]["IR_FILE"]["file_name"] == stored
