"""Answers on demand (sandbox.rules) over real HTTP: every kind of answer of SPEC §5's table."""

import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

import sandbox as sandbox_pkg
from sandbox.schema import SandboxError

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)
LOGS = "/api/v3/trackor_types/IntegrationLog/trackors"
INTEGRATIONS = "/api/v3/trackor_types/Integration/trackors"


def add(sandbox, **rule):
    answer = requests.post(sandbox.url + "/_sandbox/rules", json=rule)
    assert answer.status_code == 201, answer.text
    return answer.json()[0]


def create_integration(sandbox, key, **kwargs):
    return requests.post(sandbox.url + INTEGRATIONS, auth=AUTH,
                         json={"fields": {"TRACKOR_KEY": key, "INT_NAME": key}}, **kwargs)


def keys(sandbox):
    return [r["TRACKOR_KEY"] for r in sandbox.trackors("Integration")]


def test_a_rule_answers_its_times_then_is_gone(sandbox):
    rule = add(sandbox, method="GET", path="^/api/v3/trackor_types/Integration/trackors$", times=2,
               status=503, headers={"Retry-After": "2"}, body="busy")
    assert rule["remaining"] == 2 and rule["id"] >= 1
    first = requests.get(sandbox.url + INTEGRATIONS, auth=AUTH)
    assert first.status_code == 503 and first.headers["Retry-After"] == "2" and first.text == "busy"
    assert first.headers["Content-Type"].startswith("text/plain")
    listed = requests.get(sandbox.url + "/_sandbox/rules").json()
    assert [(r["id"], r["remaining"], r["matched"]) for r in listed] == [(rule["id"], 1, 1)]
    assert requests.get(sandbox.url + INTEGRATIONS, auth=AUTH).status_code == 503
    assert requests.get(sandbox.url + "/_sandbox/rules").json() == []
    assert requests.get(sandbox.url + INTEGRATIONS, auth=AUTH).status_code == 200
    stats = sandbox.stats()
    assert stats["ruled"] == 2 and stats["read"] == 1 and stats["total"] == 3


def test_first_matching_rule_wins_and_conditions_all_hold(sandbox):
    add(sandbox, method="POST", path="Integration/trackors$", body_contains='"INT-9"', status=409)
    add(sandbox, method="GET", path="Integration/trackors$", query_contains='INT_NAME="Example', status=418)
    add(sandbox, path="Integration", status=422)  # any method: a catch-all behind the others
    assert create_integration(sandbox, "INT-9").status_code == 409
    assert create_integration(sandbox, "INT-8").status_code == 422
    named = requests.get(sandbox.url + INTEGRATIONS, params={"INT_NAME": '"Example Daily Import"'}, auth=AUTH)
    assert named.status_code == 418  # matched on the decoded query string
    assert requests.get(sandbox.url + INTEGRATIONS, auth=AUTH).status_code == 422
    assert requests.get(sandbox.url + "/api/v3/server_info").status_code == 200
    assert keys(sandbox) == ["INT-1", "INT-2"]  # nothing ruled was processed


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 599])
def test_any_status_passes_through(sandbox, status):
    sandbox.add_rule(path="^/api/v3/trackors/", status=status, body="status %d" % status)
    answer = requests.get(sandbox.url + "/api/v3/trackors/1", auth=AUTH)
    assert answer.status_code == status and answer.text == "status %d" % status


def test_a_redirect_to_a_login_portal(sandbox):
    add(sandbox, path="^/api/", status=302, headers={"Location": "https://sso.example.com/login"})
    answer = requests.get(sandbox.url + INTEGRATIONS, auth=AUTH, allow_redirects=False)
    assert answer.status_code == 302 and answer.headers["Location"] == "https://sso.example.com/login"


def test_an_html_page_with_200_and_a_json_of_the_wrong_shape(sandbox):
    add(sandbox, method="POST", path="trackors$", times=1, content_type="text/html; charset=utf-8",
        body="<html><body>Scheduled maintenance</body></html>")
    add(sandbox, method="POST", path="trackors$", times=1, status=201, json={"result": "ok"})
    page = create_integration(sandbox, "INT-7")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "maintenance" in page.text
    odd = create_integration(sandbox, "INT-7")
    assert odd.status_code == 201 and odd.json() == {"result": "ok"}
    assert odd.headers["Content-Type"].startswith("application/json")
    assert keys(sandbox) == ["INT-1", "INT-2"]


def test_after_commit_the_create_lands_but_the_answer_is_a_500(sandbox):
    add(sandbox, method="POST", path=INTEGRATIONS + "$", times=1, after_commit=True, status=500,
        body="Internal error")
    answer = create_integration(sandbox, "INT-7")
    assert answer.status_code == 500
    assert "INT-7" in keys(sandbox)
    assert create_integration(sandbox, "INT-7").status_code == 400  # a blind resend meets the duplicate
    stats = sandbox.stats()
    assert stats["ruled"] == 1 and stats["create"] == 2


@pytest.mark.parametrize("answer", [{"drop": True}, {"reset": True}])
def test_after_commit_the_create_lands_but_the_connection_breaks(sandbox, answer):
    add(sandbox, method="POST", times=1, after_commit=True, **answer)
    with pytest.raises(requests.ConnectionError):
        create_integration(sandbox, "INT-7")
    assert "INT-7" in keys(sandbox)


@pytest.mark.parametrize("answer", [{"drop": True}, {"reset": True}])
def test_drop_and_reset_process_nothing(sandbox, answer):
    add(sandbox, method="POST", times=1, **answer)
    with pytest.raises(requests.ConnectionError):
        create_integration(sandbox, "INT-7")
    assert keys(sandbox) == ["INT-1", "INT-2"]
    assert create_integration(sandbox, "INT-7").status_code == 201


def test_reset_is_a_tcp_reset(sandbox):
    add(sandbox, reset=True)
    with socket.create_connection((sandbox.host, sandbox.port), timeout=5) as conn:
        conn.sendall(b"GET /api/v3/server_info HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            while conn.recv(1024):
                pass


def raw_get(sandbox, path, timeout=10):
    """(head text, body bytes, seconds) of a GET read until the server closes the connection."""
    started = time.monotonic()
    with socket.create_connection((sandbox.host, sandbox.port), timeout=timeout) as conn:
        conn.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body, time.monotonic() - started


def test_a_body_cut_short_announces_more_than_it_sends(sandbox):
    add(sandbox, path="server_info", body_size=1000, cut_after_bytes=10, content_type="application/json")
    head, body, _ = raw_get(sandbox, "/api/v3/server_info")
    assert "Content-Length: 1000" in head and body == b"x" * 10
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # what requests makes of it
        requests.get(sandbox.url + "/api/v3/server_info")


def test_a_trickled_body_takes_its_time(sandbox):
    add(sandbox, path="server_info", body="y" * 400, trickle_bytes_per_s=1000)
    head, body, seconds = raw_get(sandbox, "/api/v3/server_info")
    assert body == b"y" * 400 and 0.35 <= seconds < 3
    # a per-read timeout does not catch a trickle: each piece comes well within it
    answer = requests.get(sandbox.url + "/api/v3/server_info", timeout=0.3)
    assert answer.text == "y" * 400


def test_trickled_headers(sandbox):
    add(sandbox, path="server_info", trickle_bytes_per_s=400, trickle_headers=True)
    started = time.monotonic()
    with socket.create_connection((sandbox.host, sandbox.port), timeout=10) as conn:
        conn.sendall(b"GET /api/v3/server_info HTTP/1.1\r\nHost: x\r\n\r\n")
        first = conn.recv(1024)
        assert len(first) < 40  # a piece of the status line, not the whole head
        head = first
        while b"\r\n\r\n" not in head:
            head += conn.recv(1024)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and time.monotonic() - started > 0.2


def test_a_delay_makes_a_client_timeout(sandbox):
    add(sandbox, path="server_info", times=1, delay_ms=1500)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(sandbox.url + "/api/v3/server_info", timeout=0.3)
    assert requests.get(sandbox.url + "/api/v3/server_info", timeout=2).status_code == 200


def test_a_session_keeps_its_connection_across_ruled_answers(sandbox):
    add(sandbox, path="server_info", times=1, status=429, headers={"Retry-After": "1"})
    with requests.Session() as session:
        assert session.get(sandbox.url + "/api/v3/server_info").status_code == 429
        assert session.get(sandbox.url + "/api/v3/server_info").status_code == 200
    assert len(sandbox.server.connections) <= 1


def test_rules_come_before_faults(sandbox):
    sandbox.set_faults(error_rate=1.0, error_status=503)
    add(sandbox, path="server_info", status=204)
    assert requests.get(sandbox.url + "/api/v3/server_info").status_code == 204
    assert requests.get(sandbox.url + INTEGRATIONS, auth=AUTH).status_code == 503


@pytest.mark.parametrize("rule, key", [
    ({"stauts": 500}, "stauts"),
    ({"status": 150}, "status"),
    ({"status": "500"}, "status"),
    ({"path": "("}, "path"),
    ({"times": 0}, "times"),
    ({"method": "FETCH"}, "method"),
    ({"headers": {"Retry-After": "1\r\nX-Evil: 1"}}, "headers"),
    ({"status": 301}, "headers"),
    ({"body": "a", "body_size": 3}, "body_size"),
    ({"body": "abc", "cut_after_bytes": 3}, "cut_after_bytes"),
    ({"trickle_headers": True}, "trickle_headers"),
    ({"trickle_bytes_per_s": 0}, "trickle_bytes_per_s"),
    ({"drop": True, "status": 500}, "status"),
    ({"after_commit": "yes"}, "after_commit"),
])
def test_a_bad_rule_is_a_400_naming_the_key(sandbox, rule, key):
    answer = requests.post(sandbox.url + "/_sandbox/rules", json=rule)
    assert answer.status_code == 400 and key in answer.text, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert requests.get(sandbox.url + "/_sandbox/rules").json() == []


def test_several_rules_at_once_all_or_none(sandbox):
    answer = requests.post(sandbox.url + "/_sandbox/rules", json=[{"status": 500}, {"status": 99}])
    assert answer.status_code == 400 and requests.get(sandbox.url + "/_sandbox/rules").json() == []
    added = requests.post(sandbox.url + "/_sandbox/rules", json=[{"status": 500}, {"status": 502}]).json()
    assert [r["status"] for r in added] == [500, 502]


def test_remove_one_and_clear(sandbox):
    first, second = add(sandbox, status=500), add(sandbox, status=502)
    listed = requests.delete("%s/_sandbox/rules/%d" % (sandbox.url, first["id"])).json()
    assert [r["id"] for r in listed] == [second["id"]]
    assert requests.delete("%s/_sandbox/rules/%d" % (sandbox.url, first["id"])).status_code == 404
    assert requests.delete(sandbox.url + "/_sandbox/rules").json() == []
    assert requests.get(sandbox.url + "/api/v3/server_info").status_code == 200


def test_in_process_rules(sandbox):
    rule = sandbox.add_rule(method="get", path="server_info", status=503, times=None)
    assert rule["remaining"] is None
    for _ in range(3):
        assert requests.get(sandbox.url + "/api/v3/server_info").status_code == 503
    assert sandbox.rules()[0]["matched"] == 3
    with pytest.raises(SandboxError) as error:
        sandbox.add_rule(status=700)
    assert error.value.status == 400 and "status" in error.value.message
    sandbox.clear_rules()
    assert requests.get(sandbox.url + "/api/v3/server_info").status_code == 200


def test_a_huge_body_is_streamed_not_held(repo_root):
    """300 MB of answer from a `python -m sandbox` process whose memory stays small."""
    process = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--db", ":memory:"],
                               cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://[\d.]+:\d+", process.stdout.readline()).group(0)
        size = 300 * 1024 * 1024
        rule = {"path": "server_info", "body_size": size, "content_type": "application/json"}
        assert requests.post(url + "/_sandbox/rules", json=rule).status_code == 201
        received = 0
        with requests.get(url + "/api/v3/server_info", stream=True, timeout=30) as answer:
            assert int(answer.headers["Content-Length"]) == size
            for chunk in answer.iter_content(1 << 20):
                received += len(chunk)
        assert received == size
        with open("/proc/%d/status" % process.pid) as status:
            peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))
        assert peak_kb < 100 * 1024
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=5)
        process.stdout.close()
        process.stderr.close()
