"""hub.api, the HTTP boundary, over real sockets: every way a connection can fail becomes one
Answer (hub.answers), with a message that names the host and never a credential; proxies from the
environment; the checks on a good answer (an update must name its trackor)."""

from __future__ import annotations

import socket
import threading

import pytest

import sandbox as sandbox_pkg
from hub.answers import Kind
from hub.api import CallFailed, OneVizion, _proxy_for
from hub.config import load_passwords
from tests.conftest import write_passwords


def api_for(tmp_path, url, seconds=2.0, **overrides):
    installation, _ = load_passwords(write_passwords(tmp_path, url, **overrides))
    return OneVizion(installation, request_seconds=seconds)


def failed(call):
    with pytest.raises(CallFailed) as caught:
        call()
    return caught.value.answer


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RawServer:
    """A TCP server that answers every connection with the same bytes (or nothing) and closes."""

    def __init__(self, answer: bytes):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._read_request(conn)
                if self.answer:
                    conn.sendall(self.answer)

    @staticmethod
    def _read_request(conn):
        """All of it, so that closing sends a FIN, not a reset."""
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536) or b"\r\n\r\n"
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536) or b"x" * length

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # wakes the thread blocked in accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


def test_a_port_nobody_listens_on_is_connection_refused_and_nothing_was_sent(tmp_path):
    api = api_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    answer = failed(lambda: api.find("Integration", {}))
    assert (answer.kind, answer.ambiguous) == (Kind.TRANSIENT, False)
    assert answer.text == f"cannot reach OneVizion at {api.host}: connection refused"
    api.close()


def test_a_name_that_does_not_resolve_is_said_so(tmp_path):
    api = api_for(tmp_path, "http://onevizion.invalid")
    answer = failed(lambda: api.find("Integration", {}))
    assert answer.kind is Kind.TRANSIENT and not answer.ambiguous
    assert answer.text == "cannot reach OneVizion at onevizion.invalid: name or service not known"
    api.close()


def test_tls_to_a_server_that_speaks_plain_http_is_a_tls_failure_with_the_fix(tmp_path, sandbox):
    api = api_for(tmp_path, f"https://127.0.0.1:{sandbox.port}")
    answer = failed(lambda: api.find("Integration", {}))
    assert answer.kind is Kind.TRANSIENT and not answer.ambiguous
    assert answer.text.startswith("TLS verification failed for 127.0.0.1:") and "CABundle" in answer.text
    api.close()


@pytest.mark.parametrize("verify", [False, True])
def test_the_tls_settings_make_a_context(tmp_path, verify):
    import ssl
    from hub.api import _tls_context
    context = _tls_context(verify)
    assert context.verify_mode == (ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)


@pytest.mark.parametrize("raw, text", [
    (b"HELLO THERE\r\n\r\n", "it does not answer in HTTP"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n", "it does not answer in HTTP"),
    (b"", "closed without an answer"),
])
def test_a_server_that_does_not_speak_http_is_a_transient_answer_that_may_have_landed(tmp_path, raw, text):
    server = RawServer(raw)
    api = api_for(tmp_path, f"http://127.0.0.1:{server.port}")
    try:
        answer = failed(lambda: api.create("IntegrationLog", {"TRACKOR_KEY": "K"}))
    finally:
        server.close()
        api.close()
    assert (answer.kind, answer.ambiguous) == (Kind.TRANSIENT, True)
    assert answer.text.endswith(text), answer.text


def test_an_update_answered_for_another_trackor_is_refused(tmp_path, sandbox):
    api = api_for(tmp_path, sandbox.url)
    sandbox.add_rule(method="PUT", json={"TRACKOR_ID": 999})
    answer = failed(lambda: api.update(1, {"INT_DESCRIPTION": "x"}))
    assert (answer.kind, answer.ambiguous) == (Kind.REFUSED, True)
    assert answer.describe() == "200: the answer names trackor 999, not 1"
    api.close()


def test_a_proxys_answer_that_echoes_the_credentials_is_masked(tmp_path, sandbox):
    api = api_for(tmp_path, sandbox.url)
    sandbox.add_rule(status=403, body=f"denied {sandbox_pkg.USER_NAME}:{sandbox_pkg.PASSWORD} "
                                      f"Authorization: {api._authorization}")
    answer = failed(lambda: api.find("Integration", {}))
    assert sandbox_pkg.PASSWORD not in answer.text and api._authorization not in answer.text
    assert answer.text.count("***") >= 2
    api.close()


def test_the_reads_the_preflight_and_the_helpers_make(tmp_path, sandbox):
    api = api_for(tmp_path, sandbox.url)
    assert api.authorize() == "Authorization succeeded"
    assert {t["name"] for t in api.schema_types()} >= {"Integration", "IntegrationRun", "IntegrationLog"}
    assert any(f["name"] == "IL_MESSAGE" for f in api.schema_fields(["IntegrationLog"]))
    assert api.system_param("PrimaryTimezone")["value"] == "America/New_York"
    [first] = api.find("Integration", {"TRACKOR_KEY": '"INT-1"'})
    assert api.read_one(first["TRACKOR_ID"], ["INT_NAME"])["TRACKOR_ID"] == first["TRACKOR_ID"]
    assert api.looks_like_onevizion()
    api.close()


def test_a_url_that_is_not_onevizion_is_told_apart_from_a_missing_trackor_type(tmp_path, sandbox):
    server = RawServer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    other = api_for(tmp_path, f"http://127.0.0.1:{server.port}")
    try:
        assert not other.looks_like_onevizion()
    finally:
        server.close()
        other.close()
    gone = api_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert gone.looks_like_onevizion()          # no answer at all: not a reason to doubt the URL
    gone.close()


def test_after_a_401_no_other_request_goes_out_with_those_credentials(tmp_path, sandbox):
    # Accounts get locked after a few failed logins: one refusal ends this invocation's sending.
    api = api_for(tmp_path, sandbox.url)
    sandbox.add_rule(status=401, body="Unauthorized")
    sandbox.reset_stats()
    first = failed(lambda: api.find("Integration", {}))
    assert first.kind is Kind.CREDENTIALS
    sandbox.clear_rules()
    again = failed(lambda: api.create("IntegrationLog", {"TRACKOR_KEY": "K"}))
    assert again is first and sandbox.stats()["total"] == 1
    api.close()


def test_a_read_whose_rows_are_not_trackors_is_refused(tmp_path, sandbox):
    # A list of something else (a portal's JSON, another API) is not an answer a read-back can trust.
    api = api_for(tmp_path, sandbox.url)
    sandbox.add_rule(method="GET", path="Integration/trackors$", json=[{"id": 1, "name": "x"}])
    answer = failed(lambda: api.find("Integration", {}))
    assert answer.kind is Kind.REFUSED
    api.close()


def test_a_long_answer_is_masked_before_it_is_cut_short(tmp_path, sandbox):
    # The password sits across the 300-character cut: neither half may show.
    api = api_for(tmp_path, sandbox.url)
    sandbox.add_rule(status=403, body="x" * 290 + sandbox_pkg.PASSWORD + "y" * 500)
    answer = failed(lambda: api.find("Integration", {}))
    assert sandbox_pkg.PASSWORD[:5] not in answer.text and "***" in answer.text
    api.close()


# -- proxies --------------------------------------------------------------------------------------------

def test_an_http_proxy_gets_the_absolute_url(tmp_path, sandbox, monkeypatch):
    # The sandbox stands in for the proxy: it serves the path of an absolute-form request line.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{sandbox.port}")
    api = api_for(tmp_path, "http://onevizion.invalid")
    sandbox.add_rule(method="GET", path="Integration/trackors$", json=[{"TRACKOR_ID": 1, "TRACKOR_KEY": "via"}])
    assert api.find("Integration", {}) == [{"TRACKOR_ID": 1, "TRACKOR_KEY": "via"}]
    api.close()


def test_an_http_proxy_with_credentials_gets_them_in_proxy_authorization(tmp_path, monkeypatch):
    seen = []
    server = RawServer(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]')
    server._read_request = lambda conn: seen.append(conn.recv(65536))
    monkeypatch.setenv("http_proxy", f"http://user:p%40ss@127.0.0.1:{server.port}")
    api = api_for(tmp_path, "http://onevizion.invalid")
    try:
        assert api.find("Integration", {}) == []
    finally:
        server.close()
        api.close()
    head = seen[0].decode("latin-1")
    assert head.startswith("GET http://onevizion.invalid/api/v3/")
    assert "Proxy-Authorization: Basic dXNlcjpwQHNz" in head      # user:p@ss


def test_an_https_proxy_that_refuses_the_tunnel_is_a_transient_answer(tmp_path, sandbox, monkeypatch):
    monkeypatch.setenv("https_proxy", f"http://user:p%40ss@127.0.0.1:{sandbox.port}")
    api = api_for(tmp_path, "https://onevizion.invalid")
    answer = failed(lambda: api.find("Integration", {}))
    assert answer.kind is Kind.TRANSIENT and "p@ss" not in answer.text
    api.close()


@pytest.mark.parametrize("environ, proxied", [
    ({}, False),
    ({"https_proxy": "proxy:3128"}, True),
    ({"HTTPS_PROXY": "http://proxy:3128"}, True),
    ({"https_proxy": "proxy:3128", "no_proxy": "*"}, False),
    ({"https_proxy": "proxy:3128", "no_proxy": "example.com"}, False),
    ({"https_proxy": "proxy:3128", "NO_PROXY": ".onevizion.com, example.com"}, False),
    ({"https_proxy": "proxy:3128", "no_proxy": "other.com"}, True),
    ({"http_proxy": "proxy:3128"}, False),              # another scheme's proxy
])
def test_which_proxy_the_environment_names(environ, proxied):
    proxy = _proxy_for("https", "acme.onevizion.com" if "NO_PROXY" in environ else "example.com", environ)
    assert bool(proxy.url) == proxied
    if proxied:
        assert (proxy.host, proxy.port) == ("proxy", 3128)
