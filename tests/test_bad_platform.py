"""Bad platform: IntegrationWrapper.py (a real process) against a OneVizion that is wrong, away, or
not OneVizion at all. Each case: input -> exit code -> a stable part of the message on stderr ->
strings that must never appear (the password, a traceback). No child may start; nothing may hang.

The broken endpoints are tiny http.server instances on 127.0.0.1 port 0 started by the test.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import sandbox as sandbox_pkg
from sandbox.server import make_server
from tests.conftest import write_passwords
from tests.hubtest import fixture_command

NEVER = ["Traceback", "internal error", sandbox_pkg.PASSWORD, sandbox_pkg.SECRET_KEY]


# ---------------------------------------------------------------- tiny broken servers

class Canned(BaseHTTPRequestHandler):
    """Answers every request with server.answer(handler) -> (status, content type, body, headers)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _any(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        status, kind, body, headers = self.server.answer(self)
        self.send_response(status)
        if kind:
            self.send_header("Content-Type", kind)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _any


def serve(answer, tls_context=None):
    """A server on 127.0.0.1:0 answering with `answer`; returns (server, url). Stop with server.shutdown()."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    server.daemon_threads = True
    server.answer, server.seen = answer, []
    scheme = "http"
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, "%s://127.0.0.1:%d" % (scheme, server.server_address[1])


@pytest.fixture
def broken():
    """broken(answer) -> url of a canned server; all stopped after the test."""
    servers = []

    def start(answer, tls_context=None):
        server, url = serve(answer, tls_context)
        servers.append(server)
        return url, server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def pw(tmp_path, url, **overrides) -> str:
    """A Passwords.json (mode 0600) in its own folder, for `url`."""
    folder = tmp_path / "p"
    folder.mkdir(exist_ok=True)
    return write_passwords(folder, url, **overrides)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def echo_headers(handler):
    """A broken proxy that echoes the request, Authorization header included, in a 500 body."""
    text = "proxy error: Authorization: %s for %s %s\n%s" % (
        handler.headers.get("Authorization"), handler.command, handler.path, handler.headers)
    return 500, "text/plain", text.encode(), None


CANNED = {
    "403": lambda h: (403, "text/plain", b"Access denied to trackor type Integration", None),
    "500": lambda h: (500, "text/plain", b"Internal Server Error: NullPointerException", None),
    "503": lambda h: (503, "text/html", b"<html><body>Maintenance</body></html>", None),
    "html-200": lambda h: (200, "text/html", b"<html><body>Welcome to the portal</body></html>", None),
    "json-not-list": lambda h: (200, "application/json", b'{"error": "nope"}', None),
    "empty-200": lambda h: (200, "application/json", b"", None),
    "login-redirect": lambda h: (302, "text/html", b"", {"Location": "/login.do?next=%2Fapi"}),
    "echo-500": echo_headers,
}


# ---------------------------------------------------------------- running the wrapper

def run_wrapper(hub, passwords, tmp_path, *extra, timeout=30):
    """IntegrationWrapper.py as a real process, one entry whose child would leave a marker file."""
    marker = tmp_path / "child-ran"
    integrations = hub.integrations_file({
        "IntegrationName": "Broken", "ExecutablePath": "/bin/sh -c 'touch \"$0\"' %s" % marker})
    hub.passwords = passwords
    done = hub.script("IntegrationWrapper.py", "-i", integrations, "--drain-seconds", "1", *extra,
                      timeout=timeout)
    assert not marker.exists(), "the child ran although OneVizion was not usable"
    return done


def check(done, code, parts, never=NEVER):
    text = done.stdout + done.stderr
    assert done.returncode == code, text
    for part in parts:
        assert part in done.stderr, (part, done.stderr)
    for bad in never:
        assert bad not in text, (bad, text)


# ---------------------------------------------------------------- cases

@pytest.mark.parametrize("case, code, parts", [
    ("403", 3, ["lacks permission (403)", "Access denied to trackor type Integration"]),
    ("500", 3, ["OneVizion answered 500 to GET /api/v3/trackor_types/Integration/trackors",
                "NullPointerException"]),
    ("503", 3, ["OneVizion answered 503"]),
    ("html-200", 3, ["with text/html, not JSON", "is URL in Passwords.json the installation's address?"]),
    ("json-not-list", 3, ["something other than a list"]),
    ("empty-200", 3, ["something other than a list"]),
    ("login-redirect", 3, ["redirected GET /api/v3/trackor_types/Integration/trackors to /login.do",
                           "is URL in Passwords.json the installation's address?"]),
])
def test_a_broken_answer_exits_3_with_a_clear_message(hub, tmp_path, broken, case, code, parts):
    url, server = broken(CANNED[case])
    done = run_wrapper(hub, pw(tmp_path, url), tmp_path)
    check(done, code, parts)
    assert server.seen and {method for method, _, _ in server.seen} == {"GET"}, server.seen  # lookups only


def test_a_proxy_echoing_the_authorization_header_leaks_no_credential(hub, tmp_path, broken):
    url, _ = broken(echo_headers)
    basic = base64.b64encode(("%s:%s" % (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)).encode()).decode()
    done = run_wrapper(hub, pw(tmp_path, url), tmp_path)
    check(done, 3, ["OneVizion answered 500"], NEVER + [basic])
    assert sandbox_pkg.PASSWORD not in hub.hub_log() and basic not in hub.hub_log()


def test_a_proxy_echoing_a_bearer_token_leaks_no_secret(hub, tmp_path, broken):
    url, _ = broken(echo_headers)
    passwords = pw(tmp_path, url, UserName=None, Password=None,
                                AccessKey=sandbox_pkg.ACCESS_KEY, SecretKey=sandbox_pkg.SECRET_KEY)
    done = run_wrapper(hub, passwords, tmp_path)
    check(done, 3, ["OneVizion answered 500"])
    assert sandbox_pkg.SECRET_KEY not in hub.hub_log()


def test_refused_connection_exits_3(hub, tmp_path):
    done = run_wrapper(hub, pw(tmp_path, "http://127.0.0.1:%d" % free_port()), tmp_path)
    check(done, 3, ["cannot reach OneVizion at 127.0.0.1:", "connection refused"])


def test_unresolvable_host_exits_3(hub, tmp_path):
    done = run_wrapper(hub, pw(tmp_path, "https://onevizion.hub-test.invalid"), tmp_path)
    check(done, 3, ["cannot reach OneVizion at onevizion.hub-test.invalid"])


def test_wrong_port_that_is_not_http_exits_3(hub, tmp_path):
    """Something listens, but closes the connection at once (e.g. a database port)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def slam():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    slammer = threading.Thread(target=slam, daemon=True)
    slammer.start()
    try:
        url = "http://127.0.0.1:%d" % listener.getsockname()[1]
        done = run_wrapper(hub, pw(tmp_path, url), tmp_path)
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)   # wakes the thread blocked in accept()
        listener.close()
        slammer.join(timeout=5)
    check(done, 3, ["cannot reach OneVizion at 127.0.0.1:"])


def test_wrong_url_path_exits_with_a_message_naming_the_url(hub, tmp_path):
    done = run_wrapper(hub, pw(tmp_path, hub.sandbox.url + "/onevizion"), tmp_path)
    check(done, 3, ["is URL in Passwords.json the installation's address?"])
    assert hub.sandbox.stats()["create"] == 0


def test_wrong_password_exits_3_saying_the_credentials_were_refused(hub, tmp_path):
    wrong = "Wr0ng-Pa55word-123"
    done = run_wrapper(hub, pw(tmp_path, hub.sandbox.url, Password=wrong), tmp_path)
    check(done, 3, ["refused the credentials in Passwords.json (401)"], NEVER + [wrong])
    assert wrong not in hub.hub_log()
    assert hub.sandbox.stats()["create"] == 0 and not hub.runs()


def test_wrong_secret_key_exits_3_and_shows_no_key(hub, tmp_path):
    wrong = sandbox_pkg.SECRET_KEY[::-1]
    passwords = pw(tmp_path, hub.sandbox.url, UserName=None, Password=None,
                                AccessKey=sandbox_pkg.ACCESS_KEY, SecretKey=wrong)
    done = run_wrapper(hub, passwords, tmp_path)
    check(done, 3, ["refused the credentials in Passwords.json (401)"], NEVER + [wrong])
    assert wrong not in hub.hub_log()


# ---------------------------------------------------------------- schema mapping naming what OneVizion lacks

@pytest.mark.parametrize("schema, code, parts", [
    ({"integration": {"trackor_type": "Integrations"}}, 2,
     ["check the 'integration' section of the schema mapping", "Integrations"]),
    ({"integration": {"name": "INT_TITLE"}}, 2,
     ["check the 'integration' section of the schema mapping", "INT_TITLE"]),
    ({"run": {"trackor_type": "IntegrationRuns"}}, 2,
     ["check the 'run' section of the schema mapping", "IntegrationRuns"]),
    ({"run": {"status": "IR_STATE"}}, 2,
     ["check the 'run' section of the schema mapping", "IR_STATE"]),
])
def test_a_schema_mapping_naming_what_onevizion_lacks_says_which_entry_to_fix(hub, tmp_path, schema, code, parts):
    hub.add_integration("Broken")
    path = tmp_path / "Schema.json"
    path.write_text(json.dumps(schema))
    done = run_wrapper(hub, hub.passwords, tmp_path, "-s", str(path))
    check(done, code, parts)
    assert not hub.logs()


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    """(certificate path, key path) of a self-signed certificate for 127.0.0.1, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_sandbox(self_signed):
    """A sandbox served over HTTPS with the self-signed certificate."""
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = make_server(db=":memory:", port=0)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield "https://127.0.0.1:%d" % server.server_address[1], server
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        server.store.close()


def test_a_self_signed_certificate_is_refused_with_a_tls_message(hub, tmp_path, tls_sandbox):
    url, server = tls_sandbox
    done = run_wrapper(hub, pw(tmp_path, url), tmp_path)
    check(done, 3, ["TLS verification failed for 127.0.0.1:", "CABundle"])
    assert server.stats.snapshot()["total"] == 0


def test_cabundle_with_that_certificate_passes_tls_and_runs(hub, tmp_path, tls_sandbox, self_signed):
    url, server = tls_sandbox
    passwords = pw(tmp_path, url, CABundle=self_signed[0])
    hub.passwords = passwords
    integrations = hub.integrations_file({"IntegrationName": "Example Daily Import",
                                          "ExecutablePath": fixture_command("says.py", "out:over tls")})
    done = hub.script("IntegrationWrapper.py", "-i", integrations, "--drain-seconds", "5", timeout=30)
    assert done.returncode == 0, done.stderr
    logs = server.store.dump("IntegrationLog")
    assert [r["IL_MESSAGE"] for r in logs] == ["over tls"]


def test_verify_tls_false_accepts_the_self_signed_certificate(hub, tmp_path, tls_sandbox):
    url, server = tls_sandbox
    hub.passwords = pw(tmp_path, url, VerifyTLS=False)
    integrations = hub.integrations_file({"IntegrationName": "Example Daily Import",
                                          "ExecutablePath": fixture_command("says.py", "out:insecure")})
    done = hub.script("IntegrationWrapper.py", "-i", integrations, "--drain-seconds", "5", timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no InsecureRequestWarning per request in cron's mail
    assert [r["IL_MESSAGE"] for r in server.store.dump("IntegrationLog")] == ["insecure"]
