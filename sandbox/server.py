"""HTTP plumbing of the sandbox: the request handler, auth, answer rules and faults, start/stop.

HTTP/1.1 with keep-alive and exact Content-Length, so a requests.Session reuses its connection;
TCP_NODELAY and one write per response, so small answers are not held back by Nagle's algorithm
meeting the client's delayed ACK (that costs 40 ms a request otherwise). One thread per connection.

Paths: /api/... (see api.py; rules and faults apply here only), /_sandbox/... (control.py), / and /ui/...
(page.py, which answers through ``handler.send``).

In-process use (tests, benchmark)::

    handle = start_in_thread(db=":memory:", port=0, drop_fields=["IL_FILE"])
    requests.get(handle.url + "/api/v3/server_info")
    handle.set_faults(error_rate=1.0, error_status=503); handle.stats()
    handle.add_rule(method="POST", path="IntegrationLog", status=429, headers={"Retry-After": "2"})
    handle.set_schema(autogen_keys=["IntegrationRun"]); handle.stop()

Per /api/ request: the answer rules first (sandbox.rules; a matching rule answers, the faults do
not apply), then the faults (sandbox.faults), then the API.
"""

from __future__ import annotations

import base64
import hmac
import socket
import struct
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import sandbox
from sandbox import api, control, faults as faults_mod, page, rules as rules_mod, variants
from sandbox.schema import SandboxError
from sandbox.store import Store

MAX_BODY = 128 * 1024 * 1024   # above the hub's default upload limit (100 MB)
DRAIN_LIMIT = 256 * 1024 * 1024  # past this a too-large body is not even read: the connection closes


_AUTH_HEADERS = {"WWW-Authenticate": 'Basic realm="OneVizion sandbox"'}


class _Dropped(Exception):
    """Close the connection without an answer."""


class _Reset(Exception):
    """Reset the connection (TCP RST) without an answer."""


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # many clients open a connection per call (the onevizion client does)

    def __init__(self, address, store, faults, credentials, verbose=False):
        super().__init__(address, Handler)
        self.store, self.faults, self.stats = store, faults, faults_mod.Stats()
        self.rules, self.stopping = rules_mod.Rules(), threading.Event()
        self.credentials, self.verbose = credentials, verbose
        self.connections, self.connections_lock = set(), threading.Lock()

    def server_activate(self):
        super().server_activate()
        # serve_forever accepts only after select() says a connection waits; non-blocking, an
        # accept that finds none after all (the client gave up in between) returns instead of
        # blocking the loop, and with it shutdown(), for good.
        self.socket.setblocking(False)

    def close_connections(self):
        """Shut every open keep-alive connection so its handler thread ends."""
        with self.connections_lock:
            for connection in list(self.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OneVizionSandbox/" + sandbox.VERSION
    timeout = 300  # idle keep-alive connections end eventually

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self):
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _dispatch(self):
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query, keep_blank_values=True)
        try:
            if path.startswith("/api/"):
                self._api(path, query, split.query)
            elif path == "/_sandbox" or path.startswith("/_sandbox/"):
                body = self.read_body()
                self.send_response_obj(control.handle(self.server, self.command, path, query, body))
            elif path == "/" or path == "/ui" or path.startswith("/ui/"):
                if not page.handle(self, path, query, self.server.store):
                    raise SandboxError(404, "No such page: %s" % path)
            else:
                raise SandboxError(404, "Not found: %s" % path)
        except _Dropped:
            self.close_connection = True
        except _Reset:
            self._reset()
        except SandboxError as error:
            self.send_error_text(error.status, error.message)
        except Exception as error:  # a sandbox bug must still answer, and say what it was
            traceback.print_exc()
            self.send_error_text(500, "Internal sandbox error: %r" % (error,))

    def _api(self, path, query, query_string):
        started = self.server.stats.enter()
        try:
            self._api_request(path, query, query_string)
        finally:
            self.server.stats.leave(started)

    def _api_request(self, path, query, query_string):
        stats, faults, rules = self.server.stats, self.server.faults, self.server.rules
        stats.count("total")
        body = None
        if rules:  # a rule may look at the body, so it is read before anything else
            body = self.read_body()
            rule = rules.take(self.command, path, query_string, body)
            if rule is not None:
                stats.count("ruled")
                self._ruled(rule, path, query, body)
                return
        if faults.is_down():
            stats.count("faulted")
            raise _Dropped()
        delay = faults.delay()
        if delay:
            time.sleep(delay)
        decision = faults.draw()
        if decision == faults_mod.DROP:
            stats.count("faulted")
            raise _Dropped()
        if decision == faults_mod.ERROR:
            stats.count("faulted")
            if body is None:
                self.read_body()
            status = faults.settings()["error_status"]
            raise SandboxError(status, "Service unavailable (sandbox fault)" if status == 503
                               else "Internal server error (sandbox fault)")
        response = self._process(path, query, self.read_body() if body is None else body)
        if decision == faults_mod.DROP_AFTER:
            stats.count("faulted")
            raise _Dropped()
        self.send_response_obj(response)

    def _process(self, path, query, body):
        """Route, authorize and run one API request; its Response (errors included), counted."""
        stats = self.server.stats
        try:
            kind, handler, args, public = api.route(self.command, path)
            if not public and not self._authorized():
                stats.count("auth_failed")
                raise SandboxError(401, self._auth_failure())
            stats.count(kind)
            return handler(self.server.store, api.Request(self.command, path, query, self.headers, body),
                           *args)
        except SandboxError as error:
            return api.Response(error.status, error.message.encode("utf-8"),
                                headers=_AUTH_HEADERS if error.status == 401 else None)

    def _ruled(self, rule, path, query, body):
        """Answer with a rule (sandbox.rules), after processing the request for real if it says so."""
        if rule.after_commit:
            self._process(path, query, body)
        if rule.delay_ms and self.server.stopping.wait(rule.delay_ms / 1000.0):
            raise _Dropped()
        if rule.drop:
            raise _Dropped()
        if rule.reset:
            raise _Reset()
        extra = [("Server", self.version_string()), ("Date", self.date_time_string())]
        if self.close_connection:  # the client asked for it; a body cut short does not say so
            extra.append(("Connection", "close"))
        self.log_request(rule.status)
        try:
            rules_mod.write_answer(self.wfile.write, rule, rule.head(self.protocol_version, extra),
                                   self.command != "HEAD", self.server.stopping)
        except OSError:
            self.close_connection = True
        if rule.closes:
            self.close_connection = True

    def _reset(self):
        # SO_LINGER 0 turns the close into a reset; the socket is closed here, before the server's
        # own shutdown(SHUT_WR) could send an orderly FIN first.
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    def _auth_failure(self) -> str:
        """Why the credentials were refused (never echoing them), as the 401 body says it."""
        scheme = (self.headers.get("Authorization") or "").partition(" ")[0].lower()
        if scheme == "basic":
            return "Authorization failed: wrong user name or password"
        if scheme == "bearer":
            return "Authorization failed: wrong access key or secret key"
        return "Authorization failed: no credentials (Basic or Bearer) given"

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        user, password, access_key, secret_key = self.server.credentials
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return False
            expected = "%s:%s" % (user, password)
        elif scheme.lower() == "bearer":
            given, expected = value.strip(), "%s:%s" % (access_key, secret_key)
        else:
            return False
        return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))

    def read_body(self) -> bytes:
        """The request body (Content-Length or chunked); 413 past MAX_BODY, 400 when malformed."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise SandboxError(400, "Bad Content-Length") from None
        if length < 0:
            self.close_connection = True
            raise SandboxError(400, "Bad Content-Length")
        if length > MAX_BODY:
            self.close_connection = True
            if length > DRAIN_LIMIT:
                raise _Dropped()
            # Read the body away first, so the client gets to see the 413 instead of a reset.
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 20))
                length = length - len(chunk) if chunk else 0
            raise SandboxError(413, "Request body larger than %d bytes" % MAX_BODY)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise SandboxError(400, "Bad chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                self.close_connection = True
                raise SandboxError(413, "Request body larger than %d bytes" % MAX_BODY)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def send_error_text(self, status: int, message: str):
        headers = _AUTH_HEADERS if status == 401 else None
        self.send(status, message.encode("utf-8"), "text/plain;charset=UTF-8", headers)

    def send_response_obj(self, response):
        self.send(response.status, response.body, response.content_type, response.headers)

    def send(self, status: int, body: bytes, content_type: str, headers=None):
        """Send a whole answer in one write. For page.py too."""
        self.send_response(status)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n" + (body if self.command != "HEAD" else b""))
        self.flush_headers()


class SandboxHandle:
    """A running sandbox: ``url``, ``port``, ``store``, faults and counters, and ``stop()``."""

    def __init__(self, server: SandboxServer, thread):
        self.server, self.thread = server, thread
        self.store, self.faults = server.store, server.faults
        host, self.port = server.server_address[:2]
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.url = "http://%s:%d" % (self.host, self.port)

    def set_faults(self, **settings):
        """Change any fault knob (see sandbox.faults): latency_ms, error_rate, error_status, ..."""
        self.faults.update(settings)

    def clear_faults(self):
        self.faults.clear()

    def stats(self) -> dict:
        return self.server.stats.snapshot()

    def reset_stats(self):
        self.server.stats.reset()

    def trackors(self, type_name: str, parent_id=None) -> list:
        """Every trackor of a type, as GET /_sandbox/trackors/{type} returns them."""
        return self.store.dump(type_name, parent_id)

    def add_trackor_type(self, name: str, parent=None, fields=None, label=None, prefix=None):
        from sandbox.schema import parse_fields_spec
        return self.store.add_type(name, parent, parse_fields_spec(fields or {}), label, prefix).describe()

    def set_schema(self, **settings) -> dict:
        """Change schema settings at run time (sandbox.variants keys); the settings in force."""
        return self.store.set_variant(settings)

    def clear_schema(self) -> dict:
        return self.store.clear_variant()

    def reset(self):
        self.store.reset()

    def add_rule(self, **rule) -> dict:
        """Add an answer rule (keys of sandbox.rules); its description, with ``id``."""
        return self.server.rules.add(rule)[0]

    def rules(self) -> list:
        return self.server.rules.describe()

    def clear_rules(self):
        self.server.rules.clear()

    def stop(self):
        self.server.stopping.set()
        self.server.shutdown()
        self.server.close_connections()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def make_server(db=":memory:", host="127.0.0.1", port=0, integrations_path=sandbox.INTEGRATIONS_EXAMPLE,
                passwords_path=sandbox.PASSWORDS_EXAMPLE, verbose=False, **settings):
    """A bound SandboxServer, its store seeded. ``settings`` are sandbox.faults knobs (latency_ms,
    error_rate, ...) and sandbox.variants schema settings (drop_fields, field_types, drop_values,
    mandatory_fields, autogen_keys, labels, field_lengths, timezone); None means not set."""
    given = {k: v for k, v in settings.items() if v is not None}
    schema_settings = {k: given.pop(k) for k in variants.KEYS if k in given}
    faults = faults_mod.Faults(**given)
    store = Store(db, integrations_path, schema_settings)
    user, password = sandbox.load_credentials(passwords_path)
    credentials = (user, password, sandbox.ACCESS_KEY, sandbox.SECRET_KEY)
    try:
        return SandboxServer((host, port), store, faults, credentials, verbose)
    except BaseException:
        store.close()
        raise


def start_in_thread(db=":memory:", host="127.0.0.1", port=0, integrations_path=sandbox.INTEGRATIONS_EXAMPLE,
                    latency_ms=0, error_rate=0.0, error_status=500, drop_rate=0.0,
                    drop_after_commit=False, seed=None, passwords_path=sandbox.PASSWORDS_EXAMPLE,
                    verbose=False, drop_fields=None, field_types=None, drop_values=None,
                    mandatory_fields=None, autogen_keys=None, labels=None, field_lengths=None,
                    timezone=None) -> SandboxHandle:
    """Start a sandbox serving in a daemon thread; returns once it accepts connections.

    The schema settings (drop_fields ... timezone) make a sandbox whose schema is wrong in chosen
    ways; see sandbox.variants. Example: ``start_in_thread(drop_fields=["IL_FILE"],
    autogen_keys=["IntegrationRun"], timezone="Europe/Berlin")``.
    """
    server = make_server(db, host, port, integrations_path, passwords_path, verbose,
                         latency_ms=latency_ms, error_rate=error_rate, error_status=error_status,
                         drop_rate=drop_rate, drop_after_commit=drop_after_commit, seed=seed,
                         drop_fields=drop_fields, field_types=field_types, drop_values=drop_values,
                         mandatory_fields=mandatory_fields, autogen_keys=autogen_keys, labels=labels,
                         field_lengths=field_lengths, timezone=timezone)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="sandbox-%d" % server.server_address[1], daemon=True)
    thread.start()
    return SandboxHandle(server, thread)
