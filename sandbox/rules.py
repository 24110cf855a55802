"""Answers on demand: rules that replace the answer to matching /api/ requests.

A rule is a JSON object (POST /_sandbox/rules) or keyword arguments (SandboxHandle.add_rule). What
it matches -- all given conditions must hold:

    method          "GET", "POST", ... or "ANY" (default)
    path            a regular expression searched in the request's path (percent-decoded, no query),
                    e.g. "^/api/v3/trackor_types/IntegrationLog/trackors$"; default: any /api/ path
    query_contains  a substring of the query string (raw or percent-decoded)
    body_contains   a substring of the request body
    times           how many matching requests it answers, then it is gone; null (default) = until
                    removed

What it answers (defaults: 200, text/plain, empty body):

    status              200-599 (a 3xx other than 304 needs a Location header)
    content_type        the Content-Type (default "text/plain;charset=UTF-8"; "application/json"
                        with ``json``)
    headers             more headers, e.g. {"Retry-After": "2"} or {"Location": "https://sso/login"}
    body                the body, as text (UTF-8)
    json                the body, as a JSON value
    body_size           N bytes of filler instead ("x" repeated), streamed: never held in memory
    trickle_bytes_per_s send the body at this rate (a slow server); with trickle_headers: true the
                        status line and headers too
    cut_after_bytes     announce the whole body in Content-Length, send only this many bytes of it,
                        then close the connection (a body cut short)
    delay_ms            wait this long before answering
    drop                true: close the connection without an answer
    reset               true: reset the connection (TCP RST) without an answer
    after_commit        true: the request is processed for real first (the trackor is created, the
                        file stored), then the rule's answer replaces the real one; default false:
                        the request is not processed at all

Rules are tried in the order added; the first match wins and uses up one of its ``times``. A bad
rule is refused whole with SandboxError(400) naming the key. Rules are checked before the faults of
sandbox.faults, and a request a rule answers is not subject to them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.client import responses as REASONS
from urllib.parse import unquote, unquote_plus

from sandbox.schema import bad

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "ANY")
MATCH_KEYS = ("method", "path", "query_contains", "body_contains", "times")
ANSWER_KEYS = ("status", "content_type", "headers", "body", "json", "body_size",
               "trickle_bytes_per_s", "trickle_headers", "cut_after_bytes")
OTHER_KEYS = ("delay_ms", "drop", "reset", "after_commit")
KEYS = MATCH_KEYS + ANSWER_KEYS + OTHER_KEYS
TEXT_TYPE = "text/plain;charset=UTF-8"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_REDIRECT_WITHOUT_LOCATION_OK = (304,)


class Rule:
    """One checked rule. ``remaining`` is None for a rule that lasts until removed."""

    def __init__(self, rule_id: int, spec: dict):
        if not isinstance(spec, dict):
            raise bad("A rule is a JSON object")
        unknown = sorted(str(k) for k in spec if k not in KEYS)
        if unknown:
            raise bad("Unknown rule key(s): %s (known: %s)" % (", ".join(unknown), ", ".join(KEYS)))
        self.id = rule_id
        self.spec = dict(spec)
        self.matched = 0
        method = spec.get("method") or "ANY"
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise bad("Rule key 'method' must be one of %s" % ", ".join(METHODS))
        self.method = method.upper()
        try:
            self.path = re.compile(_text(spec, "path") or "")
        except re.error as error:
            raise bad("Rule key 'path' is not a regular expression: %s" % error) from None
        self.query_contains = _text(spec, "query_contains")
        self.body_contains = _text(spec, "body_contains")
        self.body_needle = self.body_contains.encode("utf-8") if self.body_contains else None
        self.remaining = _count(spec, "times", minimum=1)
        self.delay_ms = _number(spec, "delay_ms", 0.0)
        self.drop = _flag(spec, "drop")
        self.reset = _flag(spec, "reset")
        self.after_commit = _flag(spec, "after_commit")
        if self.drop and self.reset:
            raise bad("Rule keys 'drop' and 'reset' exclude each other")
        if self.drop or self.reset:
            given = [k for k in ANSWER_KEYS if k in spec]
            if given:
                raise bad("Rule key '%s' makes no sense with '%s' (no answer is sent)"
                          % (given[0], "drop" if self.drop else "reset"))
        self._answer(spec)
        self.closes = self.cut_after is not None or any(
            name.lower() == "connection" and "close" in value.lower() for name, value in self.headers)

    def _answer(self, spec):
        status = spec.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise bad("Rule key 'status' must be a number from 200 to 599")
        self.status = status
        headers = spec.get("headers") or {}
        if not isinstance(headers, dict):
            raise bad("Rule key 'headers' must be an object of header names to values")
        self.headers = []
        for name, value in headers.items():
            if not isinstance(name, str) or not _TOKEN.match(name):
                raise bad("Rule key 'headers': %r is not a header name" % (name,))
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise bad("Rule key 'headers': the value of %s must be text" % name)
            value = str(value)
            if "\r" in value or "\n" in value:
                raise bad("Rule key 'headers': the value of %s holds a line break" % name)
            self.headers.append((name, value))
        names = {name.lower() for name, _ in self.headers}
        if 300 <= status <= 399 and status not in _REDIRECT_WITHOUT_LOCATION_OK \
                and "location" not in names:
            raise bad("Rule key 'headers' needs a Location for a %d redirect" % status)
        bodies = [k for k in ("body", "json", "body_size") if k in spec]
        if len(bodies) > 1:
            raise bad("Rule key '%s' excludes '%s' (one body per rule)" % (bodies[1], bodies[0]))
        self.content_type = _text(spec, "content_type")
        if "json" in spec:
            self.body = json.dumps(spec["json"], ensure_ascii=False).encode("utf-8")
            self.content_type = self.content_type or "application/json;charset=UTF-8"
        else:
            self.body = (_text(spec, "body") or "").encode("utf-8")
        self.content_type = self.content_type or TEXT_TYPE
        self.body_size = _count(spec, "body_size", minimum=0)
        length = self.length
        if status in (204, 304) and length:
            raise bad("Rule key 'status': a %d answer has no body" % status)
        self.trickle = _number(spec, "trickle_bytes_per_s", None)
        if self.trickle is not None and self.trickle <= 0:
            raise bad("Rule key 'trickle_bytes_per_s' must be above 0")
        self.trickle_headers = _flag(spec, "trickle_headers")
        if self.trickle_headers and self.trickle is None:
            raise bad("Rule key 'trickle_headers' needs 'trickle_bytes_per_s'")
        self.cut_after = _count(spec, "cut_after_bytes", minimum=0)
        if self.cut_after is not None and self.cut_after >= length:
            raise bad("Rule key 'cut_after_bytes' must be less than the body's %d bytes" % length)

    @property
    def length(self) -> int:
        return self.body_size if self.body_size is not None else len(self.body)

    def matches(self, method: str, path: str, query_string: str, body: bytes) -> bool:
        if self.method != "ANY" and self.method != method:
            return False
        if not self.path.search(unquote(path)):
            return False
        if self.query_contains and self.query_contains not in query_string \
                and self.query_contains not in unquote_plus(query_string):
            return False
        if self.body_needle and self.body_needle not in (body or b""):
            return False
        return True

    def describe(self) -> dict:
        """The rule as given, with its id, ``remaining`` times (null: until removed), ``matched``."""
        return dict(self.spec, id=self.id, remaining=self.remaining, matched=self.matched)

    def head(self, protocol="HTTP/1.1", extra_headers=()) -> bytes:
        """Status line and headers of the answer, ending with the blank line; ``extra_headers``
        (Server, Date, ...) unless the rule gives its own of the same name."""
        lines = ["%s %d %s" % (protocol, self.status, REASONS.get(self.status, "Unknown"))]
        given = {name.lower() for name, _ in self.headers}
        for name, value in extra_headers:
            if name.lower() not in given:
                lines.append("%s: %s" % (name, value))
        if "content-type" not in given and (self.length or self.status not in (204, 304)):
            lines.append("Content-Type: %s" % self.content_type)
        if "content-length" not in given and self.status not in (204, 304):
            lines.append("Content-Length: %d" % self.length)
        lines.extend("%s: %s" % pair for pair in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def body_chunks(self, chunk_size=64 * 1024):
        """The body in pieces, stopping at ``cut_after_bytes``: filler is made as it is sent."""
        limit = self.length if self.cut_after is None else self.cut_after
        if self.body_size is None:
            yield self.body[:limit]
            return
        filler = b"x" * chunk_size
        while limit > 0:
            piece = filler[:min(limit, chunk_size)]
            limit -= len(piece)
            yield piece


class Rules:
    """The ordered list of rules. Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rules = []
        self._next_id = 1

    def add(self, spec) -> list:
        """Add one rule (an object) or several (a list), all checked first; their descriptions."""
        specs = spec if isinstance(spec, list) else [spec]
        with self._lock:
            rules = [Rule(self._next_id + n, s) for n, s in enumerate(specs)]
            self._next_id += len(rules)
            self._rules.extend(rules)
            return [r.describe() for r in rules]

    def take(self, method, path, query_string, body):
        """The first rule matching this request, its use counted (a used-up rule is gone), or None."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, query_string, body):
                    rule.matched += 1
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining == 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def __bool__(self):
        with self._lock:
            return bool(self._rules)

    def describe(self) -> list:
        with self._lock:
            return [r.describe() for r in self._rules]

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self):
        with self._lock:
            self._rules = []


def _text(spec, key):
    value = spec.get(key)
    if value is not None and not isinstance(value, str):
        raise bad("Rule key '%s' must be text" % key)
    return value


def _flag(spec, key):
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise bad("Rule key '%s' must be true or false" % key)
    return value


def _count(spec, key, minimum):
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad("Rule key '%s' must be a whole number of at least %d%s"
                  % (key, minimum, " or null" if key == "times" else ""))
    return value


def _number(spec, key, default):
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise bad("Rule key '%s' must be a non-negative number" % key)
    return float(value)


def write_answer(write, rule: Rule, head: bytes, with_body: bool, stopping: threading.Event):
    """Send ``head`` and the rule's body through ``write`` (a socket file's write), paced when the
    rule trickles. OSError when the client goes away, or the sandbox stops while trickling."""
    chunks = rule.body_chunks() if with_body else iter(())
    if rule.trickle is None:
        write(head + next(chunks, b""))  # one write: small answers are not split by Nagle
        for chunk in chunks:
            write(chunk)
        return
    pacer = _Pacer(write, rule.trickle, stopping)
    if rule.trickle_headers:
        pacer.send(head)
    else:
        write(head)
    for chunk in chunks:
        pacer.send(chunk)


class _Pacer:
    """Writes at most ``rate`` bytes a second, in pieces of about a twentieth of a second."""

    def __init__(self, write, rate, stopping):
        self.write, self.rate, self.stopping = write, rate, stopping
        self.piece = max(1, int(rate / 20))
        self.started, self.sent = time.monotonic(), 0

    def send(self, data: bytes):
        for start in range(0, len(data), self.piece):
            part = data[start:start + self.piece]
            self.write(part)
            self.sent += len(part)
            wait = self.started + self.sent / self.rate - time.monotonic()
            if wait > 0 and self.stopping.wait(wait):
                raise OSError("the sandbox is stopping")
