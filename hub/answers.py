"""What an answer from OneVizion (or from whatever stands in front of it) means for the
hub: one classification, in one place, used by every call (SPEC §5 "Every answer
counts"). Pure: no I/O, so the whole table is tested without a server.

    kind          answers                                       what the caller does
    DELIVERED     2xx with the expected JSON shape              marks the item delivered
    TRANSIENT     no answer (refused, reset, timeout, cut       retries with backoff; `throttle`
                  short), 408, 429, 502, 503, 504               lowers concurrency; Retry-After
    SERVER_ERROR  500 (and other 5xx)                           reads back by key, retries; the
                                                                same item five times: refused
    CREDENTIALS   401                                           stops sending for this invocation
    REFUSED       400, 403, 404, 409, 413, 422, any other 4xx,  quarantines the item
                  a redirect, a 2xx that is not the expected
                  JSON (a login or maintenance page)

`ambiguous` says that the request may have been committed although the hub did not see
a good answer: before a create is sent again, a read by its exact key decides.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional


class Kind(enum.Enum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"
    SERVER_ERROR = "server error"
    CREDENTIALS = "credentials"
    REFUSED = "refused"


class Shape(enum.Enum):
    """What a successful answer to each call looks like (onevizion-api.md "Endpoints")."""

    CREATED = "an object with TRACKOR_ID"          # create: {"TRACKOR_ID": 1, "TRACKOR_KEY": "K"}
    UPDATED = "an object with TRACKOR_ID"          # update by id (it names the trackor updated)
    LIST = "a list"                                # schema lists
    TRACKORS = "a list of trackors"                # reads: each with TRACKOR_ID and TRACKOR_KEY
    OBJECT = "an object"                           # read one, server_info, params
    BLOB_ID = "a file id (a bare integer)"         # upload
    TEXT = "text"                                  # /api/authorize
    ANY = "anything"                               # delete


@dataclass(frozen=True)
class Answer:
    kind: Kind
    status: Optional[int]          # the HTTP status; None when there was no answer
    text: str                      # why, for logs and --status: short, secrets already masked
    ambiguous: bool = False        # the request may have been committed
    throttle: bool = False         # a sign of overload: fewer connections for a while
    retry_after: Optional[float] = None   # seconds the server asked to wait
    value: Any = None              # DELIVERED: the parsed answer

    @property
    def delivered(self) -> bool:
        return self.kind is Kind.DELIVERED

    def describe(self) -> str:
        """"403: no permission" / "no answer: connection refused", for messages and --status."""
        return f"{self.status}: {self.text}" if self.status is not None else f"no answer: {self.text}"


REDIRECTED = "redirected to "
# Statuses that mean "not now" rather than "no".
_TRANSIENT = {408: False, 429: False, 502: True, 503: True, 504: True}   # status -> ambiguous
_THROTTLE = {408, 429, 503, 504}
MAX_RETRY_AFTER = 600.0


def classify(status: int, headers: Mapping[str, str], body: bytes, shape: Shape, text: str,
             too_large: bool = False, now: Callable[[], float] = time.time) -> Answer:
    """The meaning of one HTTP answer. `text` is the body's start, already masked; `too_large`
    says the body was cut at the hub's answer limit (it is then never the expected shape)."""
    retry_after = parse_retry_after(_header(headers, "Retry-After"), now)
    if 200 <= status < 300:
        if too_large:
            return Answer(Kind.REFUSED, status, f"an answer larger than the hub reads ({text})", ambiguous=True)
        ok, value, parsed = _expected(shape, body)
        if ok:
            return Answer(Kind.DELIVERED, status, "", value=value)
        if parsed:
            why = f"something other than {shape.value}"
        else:
            why = f"{_header(headers, 'Content-Type') or 'no content type'}, not JSON"
        return Answer(Kind.REFUSED, status, f"{why}: {text or '(empty)'}", ambiguous=True)
    if 300 <= status < 400:
        where = _header(headers, "Location") or "nowhere"
        return Answer(Kind.REFUSED, status, f"{REDIRECTED}{where}", ambiguous=True)
    if status == 401:
        return Answer(Kind.CREDENTIALS, status, text or "authorization failed")
    if status in _TRANSIENT:
        return Answer(Kind.TRANSIENT, status, text, ambiguous=_TRANSIENT[status], throttle=status in _THROTTLE,
                      retry_after=retry_after)
    if status >= 500:
        return Answer(Kind.SERVER_ERROR, status, text, ambiguous=True, retry_after=retry_after)
    return Answer(Kind.REFUSED, status, text)


def no_answer(reason: str, sent: bool, timed_out: bool = False) -> Answer:
    """No answer at all. `sent`: the request (or part of it) had gone out, so it may have
    been committed; a connection that was never made (refused, DNS) was not."""
    return Answer(Kind.TRANSIENT, None, reason, ambiguous=sent, throttle=timed_out)


def parse_retry_after(value: Optional[str], now: Callable[[], float] = time.time) -> Optional[float]:
    """Retry-After as seconds: a number of seconds or an HTTP date; capped at ten minutes."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None:
        for key, item in getattr(headers, "items", lambda: [])():
            if key.lower() == name.lower():
                return item
    return value


def _expected(shape: Shape, body: bytes):
    """(matches, value, is JSON) for a 2xx body and the shape the call expects."""
    if shape is Shape.ANY:
        return True, None, True
    if shape is Shape.TEXT:
        return True, body.decode("utf-8", "replace"), False
    if not body.strip():
        return False, None, True     # an empty answer: JSON's nothing, not a page
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None, False
    if shape in (Shape.CREATED, Shape.UPDATED):
        ok = isinstance(value, dict) and _is_id(value.get("TRACKOR_ID"))
    elif shape is Shape.LIST:
        ok = isinstance(value, list) and all(isinstance(row, dict) for row in value)
    elif shape is Shape.TRACKORS:
        ok = isinstance(value, list) and all(isinstance(row, dict) and _is_id(row.get("TRACKOR_ID"))
                                             and isinstance(row.get("TRACKOR_KEY"), str) for row in value)
    elif shape is Shape.OBJECT:
        ok = isinstance(value, dict)
    elif shape is Shape.BLOB_ID:
        ok = _is_id(value) or (isinstance(value, str) and value.strip().isdigit())
    else:
        ok = False
    return ok, value, True


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
