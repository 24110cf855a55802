"""The only module that talks HTTP to OneVizion (REST API v3).

Built on the standard library's http.client rather than requests, for four reasons the
README gives in full: every request has a *total* deadline (connect, answer and the whole
body; a server that trickles a byte a second is a timeout, which a per-read timeout never
notices), at most 1 MB of any answer is read, an upload streams from the open file with an
exact length, and a helper script starts in a fraction of the time importing requests takes.

Every call either returns what a good answer holds or raises `CallFailed` carrying the
hub.answers classification (delivered / transient / server error / credentials / refused,
ambiguous or not). Nothing here retries, prints or exits; retrying belongs to the callers,
which know whether an item is safe to send again. No message carries a credential: answer
texts are cut short and every secret in them masked (a proxy may echo the request).

Connections are kept alive in a small pool shared by the threads; a watchdog thread closes
the socket of a request whose deadline has passed. Proxies come from `https_proxy`,
`http_proxy` and `no_proxy` in the environment, as curl and requests read them.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import threading
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, unquote, urlsplit

from hub import answers
from hub.answers import Answer, Shape

# The hub reads at most this much of any answer (SPEC §5 "Bounds on every request").
MAX_ANSWER_BYTES = 1 << 20
# Total seconds for one request: long enough for a busy installation, short enough that a hung
# server costs one retry. An upload gets more, by its size.
REQUEST_SECONDS = 30.0
UPLOAD_SECONDS_PER_MB = 2.0
SERVER_INFO = "/api/v3/server_info"
USER_AGENT = "IntegrationHub"


class CallFailed(Exception):
    """A call that did not get a good answer; `answer` says what it got (hub.answers)."""

    def __init__(self, answer: Answer, where: str):
        super().__init__(f"{where}: {answer.describe()}")
        self.answer = answer
        self.where = where

    @property
    def message(self) -> str:
        return str(self)


def exact(value: Any) -> str:
    """A filter value that matches exactly: OneVizion treats a double-quoted value as exact."""
    return f'"{value}"'


class OneVizion:
    """A connection pool to one OneVizion installation (hub.config.Installation)."""

    def __init__(self, installation, request_seconds: float = REQUEST_SECONDS,
                 max_answer_bytes: int = MAX_ANSWER_BYTES, user_agent: str = USER_AGENT):
        parts = urlsplit(installation.url)
        self.scheme = parts.scheme
        self.host = parts.netloc
        self._hostname = parts.hostname or ""
        self._port = parts.port or (443 if self.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self.request_seconds = request_seconds
        self.max_answer_bytes = max_answer_bytes
        self._authorization = installation.authorization()
        self._headers = {"Authorization": self._authorization, "Accept": "application/json",
                         "User-Agent": user_agent}
        self._tls = _tls_context(installation.verify) if self.scheme == "https" else None
        self._proxy = _proxy_for(self.scheme, self._hostname, os.environ)
        self._masks = _masks(installation, self._authorization)
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._is_onevizion: Optional[bool] = None
        self.refused_credentials: Optional[Answer] = None   # the 401, once one came

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._watchdog.stop()

    # -- the calls the hub makes ------------------------------------------------------

    def find(self, trackor_type: str, filters: Mapping[str, Any], fields: Sequence[str] = (),
             sort: Optional[str] = None, page: Optional[int] = None, per_page: Optional[int] = None,
             seconds: Optional[float] = None) -> List[Dict[str, Any]]:
        """Trackors of a type matching every filter (values are sent as given: wrap them with
        `exact()` to match exactly)."""
        params: List[Tuple[str, str]] = []
        if fields:
            params.append(("fields", ",".join(fields)))
        params.extend((name, str(value)) for name, value in filters.items())
        if sort:
            params.append(("sort", sort))
        if per_page:
            params.append(("page", str(page or 1)))
            params.append(("per_page", str(per_page)))
        return self.call("GET", f"/api/v3/trackor_types/{_seg(trackor_type)}/trackors", Shape.TRACKORS,
                         params=params, seconds=seconds)

    def create(self, trackor_type: str, fields: Mapping[str, Any], parents: Iterable[Tuple[str, str]] = (),
               fields_json: Optional[str] = None) -> Dict[str, Any]:
        """Create one trackor; `parents` are (trackor type, TRACKOR_KEY) pairs, named by quoted
        exact key. `fields_json`, when given, is `fields` already encoded (a record's
        Description can be 65,000 characters: it is encoded once, when the record is formed)."""
        parent_list = [{"trackor_type": t, "filter": {"TRACKOR_KEY": exact(k)}} for t, k in parents]
        encoded = fields_json if fields_json is not None else json.dumps(dict(fields))
        body = ('{"fields": %s, "parents": %s}' % (encoded, json.dumps(parent_list))).encode("utf-8")
        return self.call("POST", f"/api/v3/trackor_types/{_seg(trackor_type)}/trackors", Shape.CREATED,
                         body=body, content_type="application/json")

    def update(self, trackor_id: int, fields: Mapping[str, Any]) -> Dict[str, Any]:
        """Update one trackor by its id (flat body). The answer must name that trackor."""
        answer = self.call("PUT", f"/api/v3/trackors/{int(trackor_id)}", Shape.UPDATED,
                           body=json.dumps(dict(fields)).encode("utf-8"), content_type="application/json")
        if answer.get("TRACKOR_ID") != int(trackor_id):
            raise CallFailed(Answer(answers.Kind.REFUSED, 200, f"the answer names trackor "
                                    f"{answer.get('TRACKOR_ID')!r}, not {trackor_id}", ambiguous=True),
                             f"PUT /api/v3/trackors/{trackor_id}")
        return answer

    def upload(self, trackor_id: int, field: str, file_name: str, body) -> Any:
        """Upload into an electronic-file field. `body` is a streamed multipart body (an object
        with `content_type`, `length` and an iterator of bytes: hub.uploads)."""
        seconds = self.request_seconds + UPLOAD_SECONDS_PER_MB * body.length / 1e6
        return self.call("POST", f"/api/v3/trackor/{int(trackor_id)}/file/{_seg(field)}", Shape.BLOB_ID,
                         params=[("file_name", file_name)], body=body, content_type=body.content_type,
                         length=body.length, seconds=seconds)

    def read_one(self, trackor_id: int, fields: Sequence[str] = ()) -> Dict[str, Any]:
        params = [("fields", ",".join(fields))] if fields else []
        return self.call("GET", f"/api/v3/trackors/{int(trackor_id)}", Shape.OBJECT, params=params)

    def server_info(self, seconds: Optional[float] = None) -> Dict[str, Any]:
        return self.call("GET", SERVER_INFO, Shape.OBJECT, seconds=seconds, auth=False)

    def authorize(self) -> str:
        return self.call("GET", "/api/authorize", Shape.TEXT)

    def schema_types(self) -> List[Dict[str, Any]]:
        return self.call("GET", "/api/v3/schema/trackor_types", Shape.LIST)

    def schema_fields(self, trackor_types: Sequence[str]) -> List[Dict[str, Any]]:
        return self.call("GET", "/api/v3/schema/fields", Shape.LIST,
                         params=[("trackor_types", t) for t in trackor_types])

    def system_param(self, name: str, seconds: Optional[float] = None) -> Dict[str, Any]:
        return self.call("GET", f"/api/v3/params/system/{_seg(name)}", Shape.OBJECT, seconds=seconds)

    def looks_like_onevizion(self) -> bool:
        """Whether the public server_info answers with a JSON object: a 404 from OneVizion means a
        missing trackor type, field or id; from anything else, a wrong URL. Only a definite
        answer is remembered; no answer at all counts as OneVizion's."""
        if self._is_onevizion is None:
            try:
                self.server_info(seconds=10.0)
                self._is_onevizion = True
            except CallFailed as failed:
                if failed.answer.status is None:
                    return True
                self._is_onevizion = False
        return self._is_onevizion

    # -- one request --------------------------------------------------------------------

    def call(self, method: str, path: str, shape: Shape, params: Sequence[Tuple[str, str]] = (),
             body: Any = None, content_type: Optional[str] = None, length: Optional[int] = None,
             seconds: Optional[float] = None, auth: bool = True) -> Any:
        """One request; returns the parsed good answer or raises CallFailed. Once OneVizion has
        refused the credentials (401), no other request with them is sent by this invocation:
        every later call fails at once with that answer (a login is never hammered: accounts get
        locked)."""
        where = f"{method} {path}"
        if auth and self.refused_credentials is not None:
            raise CallFailed(self.refused_credentials, where)
        answer = self._exchange(method, self._prefix + path + _query(params), shape, body, content_type,
                                length, seconds or self.request_seconds, auth)
        if not answer.delivered:
            if answer.kind is answers.Kind.CREDENTIALS and auth:
                self.refused_credentials = answer
            raise CallFailed(answer, where)
        return answer.value

    def _exchange(self, method, target, shape, body, content_type, length, seconds, auth) -> Answer:
        deadline = time.monotonic() + seconds
        conn = self._take()
        sent = False
        watch = self._watchdog.watch(conn, deadline)
        try:
            try:
                if conn.sock is None:
                    conn.timeout = max(0.1, min(seconds, deadline - time.monotonic()))
                    conn.connect()
                conn.sock.settimeout(max(0.1, deadline - time.monotonic()))
                headers = dict(self._headers) if auth else {k: v for k, v in self._headers.items()
                                                            if k != "Authorization"}
                if content_type:
                    headers["Content-Type"] = content_type
                if body is not None:
                    headers["Content-Length"] = str(length if length is not None else len(body))
                if self._proxy.url and self.scheme == "http" and self._proxy.auth:
                    headers["Proxy-Authorization"] = self._proxy.auth
                sent = True
                conn.request(method, self._proxy.target(self, target), body=body, headers=headers)
                response = conn.getresponse()
                data = response.read(self.max_answer_bytes + 1)
            except Exception as exc:  # noqa: BLE001 - every failure becomes an Answer
                self._discard(conn)
                return self._failure(exc, sent, watch.expired)
            if watch.expired:   # the watchdog closed the socket: what was read may be cut short
                self._discard(conn)
                return self._failure(socket.timeout(), sent, True)
            too_large = len(data) > self.max_answer_bytes
            if not too_large and response.length:
                # Content-Length announced more than came before the connection closed: read(n)
                # returns the part silently (only an unbounded read raises IncompleteRead).
                self._discard(conn)
                return self._failure(http.client.IncompleteRead(data, response.length), sent, False)
            self._watchdog.unwatch(watch)   # before another thread can take the connection
            if too_large or response.will_close or not response.isclosed():
                self._discard(conn)
            else:
                self._give_back(conn)
            # Masked before it is cut short: a secret cut in two would otherwise show its half.
            text = self._short(data[:8192].decode("utf-8", "replace"))
            return answers.classify(response.status, response.headers, data, shape, text, too_large)
        finally:
            self._watchdog.unwatch(watch)

    def _failure(self, exc: Exception, sent: bool, expired: bool) -> Answer:
        if expired or isinstance(exc, socket.timeout):
            return answers.no_answer(f"OneVizion at {self.host} did not answer in time", sent, timed_out=True)
        if isinstance(exc, ssl.SSLCertVerificationError) or (isinstance(exc, ssl.SSLError) and not sent):
            return answers.no_answer(f"TLS verification failed for {self.host}: give the installation's CA "
                                     f"in Passwords.json CABundle, or set VerifyTLS false if you trust the "
                                     f"network", False)
        if isinstance(exc, socket.gaierror):
            return answers.no_answer(f"cannot reach OneVizion at {self.host}: name or service not known", False)
        if isinstance(exc, ConnectionRefusedError):
            return answers.no_answer(f"cannot reach OneVizion at {self.host}: connection refused", False)
        if isinstance(exc, http.client.IncompleteRead):
            return answers.no_answer(f"cannot reach OneVizion at {self.host}: the answer was cut short", True)
        if isinstance(exc, (http.client.BadStatusLine, http.client.LineTooLong, http.client.HTTPException)) \
                and not isinstance(exc, http.client.RemoteDisconnected):
            return answers.no_answer(f"cannot reach OneVizion at {self.host}: it does not answer in HTTP", sent)
        if isinstance(exc, (OSError, http.client.HTTPException)):
            return answers.no_answer(f"cannot reach OneVizion at {self.host}: {_reason(exc)}", sent)
        # A streamed upload whose file changed under it, or anything unforeseen: not an answer.
        return answers.no_answer(f"the request could not be completed: {type(exc).__name__}: {exc}", sent)

    # -- connections ----------------------------------------------------------------------

    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._proxy.connection(self)

    def _give_back(self, conn) -> None:
        with self._lock:
            self._idle.append(conn)

    @staticmethod
    def _discard(conn) -> None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing a broken socket may fail; it is gone either way
            pass

    def _short(self, text: str) -> str:
        """An answer's text, shortened, every credential masked."""
        for mask in self._masks:
            text = text.replace(mask, "***")
        return _short(text)


class _Proxy:
    """How requests reach the installation: directly, or through an HTTP(S) proxy."""

    def __init__(self, url: Optional[str]):
        self.url = url
        if url:
            parts = urlsplit(url if "://" in url else "http://" + url)
            self.host, self.port = parts.hostname or "", parts.port or 8080
            self.auth = None
            if parts.username is not None:
                pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("utf-8")
                self.auth = "Basic " + base64.b64encode(pair).decode("ascii")

    def connection(self, api: OneVizion) -> http.client.HTTPConnection:
        if not self.url:
            if api.scheme == "https":
                return http.client.HTTPSConnection(api._hostname, api._port, context=api._tls)
            return http.client.HTTPConnection(api._hostname, api._port)
        if api.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, context=api._tls)
            headers = {"Proxy-Authorization": self.auth} if self.auth else None
            conn.set_tunnel(api._hostname, api._port, headers=headers)
            return conn
        return http.client.HTTPConnection(self.host, self.port)

    def target(self, api: OneVizion, path: str) -> str:
        if self.url and api.scheme == "http":
            return f"http://{api.host}{path}"   # an HTTP proxy takes the absolute URL
        return path


def _proxy_for(scheme: str, hostname: str, environ: Mapping[str, str]) -> _Proxy:
    """The proxy the environment names for this scheme and host, if no_proxy does not exempt it."""
    url = environ.get(f"{scheme}_proxy") or environ.get(f"{scheme.upper()}_PROXY")
    if not url:
        return _Proxy(None)
    exempt = (environ.get("no_proxy") or environ.get("NO_PROXY") or "").replace(" ", "")
    for pattern in filter(None, exempt.split(",")):
        if pattern == "*" or hostname == pattern.lstrip(".") or hostname.endswith("." + pattern.lstrip(".")):
            return _Proxy(None)
    return _Proxy(url)


class _Watch:
    __slots__ = ("conn", "deadline", "expired")

    def __init__(self, conn, deadline):
        self.conn, self.deadline, self.expired = conn, deadline, False


class _Watchdog:
    """Closes the socket of a request whose total deadline has passed, from its own thread, so
    that a server trickling bytes cannot hold a request past it."""

    def __init__(self):
        self._watches: set = set()
        self._changed = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self._wakes_at = 0.0   # when the thread looks next (0: it is looking now)

    def watch(self, conn, deadline: float) -> _Watch:
        watch = _Watch(conn, deadline)
        with self._changed:
            self._watches.add(watch)
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._loop, name="http-deadlines", daemon=True)
                self._thread.start()
            # Requests share one timeout, so a new deadline is seldom the soonest: wake the
            # thread only when it would otherwise look too late (not once per request).
            if deadline < self._wakes_at:
                self._changed.notify()
        return watch

    def unwatch(self, watch: _Watch) -> None:
        with self._changed:
            self._watches.discard(watch)

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def _loop(self) -> None:
        with self._changed:
            while not self._stopped:
                now = time.monotonic()
                for watch in [w for w in self._watches if w.deadline <= now]:
                    self._watches.discard(watch)
                    watch.expired = True
                    sock = watch.conn.sock
                    if sock is not None:
                        try:
                            # The plain socket's shutdown, even for TLS: the thread inside recv()
                            # owns the TLS object; this only wakes it.
                            socket.socket.shutdown(sock, socket.SHUT_RDWR)
                        except OSError:
                            pass
                soonest = min((w.deadline for w in self._watches), default=now + 5.0)
                self._wakes_at = max(now + 0.01, soonest)
                self._changed.wait(self._wakes_at - now)
                self._wakes_at = 0.0


def _tls_context(verify) -> ssl.SSLContext:
    """The system's CA store, or the CABundle file; VerifyTLS false checks nothing."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()


def _masks(installation, authorization: str) -> List[str]:
    """Every text that would give a credential away: the secrets and the Authorization header."""
    masks = [value for value in installation.secrets() if value]
    masks.append(authorization)
    masks.append(authorization.partition(" ")[2])
    return sorted({m for m in masks if len(m) >= 4}, key=len, reverse=True)


def _query(params: Sequence[Tuple[str, str]]) -> str:
    if not params:
        return ""
    return "?" + "&".join(f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in params)


def _seg(name: str) -> str:
    return quote(str(name), safe="")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _reason(exc: Exception) -> str:
    """A connection error in a few words, without anything that could carry a query."""
    if isinstance(exc, http.client.RemoteDisconnected):   # a ConnectionResetError too, but a FIN, not a reset
        return "closed without an answer"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return str(text).lower()
