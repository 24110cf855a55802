"""hub.answers.classify over the SPEC's answer table (§5 "Every answer counts"): what each
(status, headers, body, expected shape) means. Pure: no server, no clock but an injected one."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from hub.answers import MAX_RETRY_AFTER, Answer, Kind, Shape, classify, no_answer, parse_retry_after

JSON = {"Content-Type": "application/json"}
HTML = {"Content-Type": "text/html"}
CREATED = b'{"TRACKOR_ID": 7, "TRACKOR_KEY": "K"}'
NOW = 1_800_000_000.0


def meaning(status, headers, body, shape=Shape.CREATED):
    answer = classify(status, headers, body, shape, body[:50].decode("utf-8", "replace"), now=lambda: NOW)
    return answer.kind, answer.ambiguous, answer.throttle, answer.retry_after


@pytest.mark.parametrize("status, headers, body, shape, expected", [
    # 2xx with the expected shape: delivered
    (201, JSON, CREATED, Shape.CREATED, (Kind.DELIVERED, False, False, None)),
    (200, JSON, CREATED, Shape.UPDATED, (Kind.DELIVERED, False, False, None)),
    (200, JSON, b'[{"TRACKOR_ID": 1}]', Shape.LIST, (Kind.DELIVERED, False, False, None)),
    (200, JSON, b"[]", Shape.LIST, (Kind.DELIVERED, False, False, None)),
    (200, JSON, b"{}", Shape.OBJECT, (Kind.DELIVERED, False, False, None)),
    (200, JSON, b"1234", Shape.BLOB_ID, (Kind.DELIVERED, False, False, None)),
    (200, JSON, b'"1234"', Shape.BLOB_ID, (Kind.DELIVERED, False, False, None)),
    (200, {}, b"Authorization succeeded", Shape.TEXT, (Kind.DELIVERED, False, False, None)),
    (204, {}, b"", Shape.ANY, (Kind.DELIVERED, False, False, None)),
    # 2xx that is not the expected JSON: refused, and it may have been committed
    (200, HTML, b"<html>Maintenance</html>", Shape.CREATED, (Kind.REFUSED, True, False, None)),
    (200, JSON, b"[]", Shape.CREATED, (Kind.REFUSED, True, False, None)),
    (200, JSON, b"[]", Shape.UPDATED, (Kind.REFUSED, True, False, None)),
    (201, JSON, b'{"ok": true}', Shape.CREATED, (Kind.REFUSED, True, False, None)),
    (201, JSON, b'{"TRACKOR_ID": true}', Shape.CREATED, (Kind.REFUSED, True, False, None)),
    (201, JSON, b'{"TRACKOR_ID": "7"}', Shape.CREATED, (Kind.REFUSED, True, False, None)),
    (200, JSON, b"", Shape.CREATED, (Kind.REFUSED, True, False, None)),
    (200, JSON, b"[1, 2]", Shape.LIST, (Kind.REFUSED, True, False, None)),
    (200, JSON, b"{}", Shape.LIST, (Kind.REFUSED, True, False, None)),
    (200, JSON, b"[]", Shape.OBJECT, (Kind.REFUSED, True, False, None)),
    (200, JSON, b'"abc"', Shape.BLOB_ID, (Kind.REFUSED, True, False, None)),
    (200, JSON, b"true", Shape.BLOB_ID, (Kind.REFUSED, True, False, None)),
    (200, JSON, b"\xff\xfe", Shape.OBJECT, (Kind.REFUSED, True, False, None)),
    (200, JSON, b"[" * 100_000, Shape.LIST, (Kind.REFUSED, True, False, None)),
    # redirects: refused (a login portal), ambiguous (a proxy may have passed it on)
    (302, {"Location": "https://sso.example.com/login"}, b"", Shape.CREATED, (Kind.REFUSED, True, False, None)),
    (301, {}, b"", Shape.LIST, (Kind.REFUSED, True, False, None)),
    (307, {"Location": "/x"}, b"", Shape.UPDATED, (Kind.REFUSED, True, False, None)),
    # 401: credentials
    (401, {}, b"Authorization failed", Shape.CREATED, (Kind.CREDENTIALS, False, False, None)),
    # transient: not now; 502-504 may have reached the server
    (408, {}, b"Request Timeout", Shape.CREATED, (Kind.TRANSIENT, False, True, None)),
    (429, {}, b"Too Many Requests", Shape.CREATED, (Kind.TRANSIENT, False, True, None)),
    (429, {"Retry-After": "7"}, b"", Shape.CREATED, (Kind.TRANSIENT, False, True, 7.0)),
    (429, {"retry-after": "2.5"}, b"", Shape.LIST, (Kind.TRANSIENT, False, True, 2.5)),
    (502, HTML, b"<html>Bad Gateway</html>", Shape.CREATED, (Kind.TRANSIENT, True, False, None)),
    (503, {}, b"Service Unavailable", Shape.CREATED, (Kind.TRANSIENT, True, True, None)),
    (503, {"Retry-After": "120"}, b"", Shape.UPDATED, (Kind.TRANSIENT, True, True, 120.0)),
    (504, HTML, b"<html>Gateway Timeout</html>", Shape.CREATED, (Kind.TRANSIENT, True, True, None)),
    # 500 and other 5xx: a server error, read back before a resend
    (500, {}, b"ORA-20000", Shape.CREATED, (Kind.SERVER_ERROR, True, False, None)),
    (500, {"Retry-After": "3"}, b"", Shape.CREATED, (Kind.SERVER_ERROR, True, False, 3.0)),
    (501, {}, b"", Shape.CREATED, (Kind.SERVER_ERROR, True, False, None)),
    (599, {}, b"", Shape.CREATED, (Kind.SERVER_ERROR, True, False, None)),
    # every other 4xx: refused, not committed
    (400, {}, b"Bad request", Shape.CREATED, (Kind.REFUSED, False, False, None)),
    (403, {}, b"Forbidden", Shape.CREATED, (Kind.REFUSED, False, False, None)),
    (404, {}, b"Not found", Shape.LIST, (Kind.REFUSED, False, False, None)),
    (409, {}, b"Conflict", Shape.CREATED, (Kind.REFUSED, False, False, None)),
    (413, {}, b"Too large", Shape.BLOB_ID, (Kind.REFUSED, False, False, None)),
    (422, {}, b"Unprocessable", Shape.CREATED, (Kind.REFUSED, False, False, None)),
    (418, {}, b"", Shape.CREATED, (Kind.REFUSED, False, False, None)),
])
def test_every_answer_has_one_meaning(status, headers, body, shape, expected):
    assert meaning(status, headers, body, shape) == expected


def test_a_good_answer_carries_its_value():
    assert classify(201, JSON, CREATED, Shape.CREATED, "").value == {"TRACKOR_ID": 7, "TRACKOR_KEY": "K"}
    assert classify(200, JSON, b"55", Shape.BLOB_ID, "").value == 55


def test_an_answer_cut_at_the_hubs_limit_is_never_the_expected_shape():
    answer = classify(200, JSON, CREATED, Shape.CREATED, "xxxx", too_large=True)
    assert (answer.kind, answer.ambiguous) == (Kind.REFUSED, True)
    assert answer.text.startswith("an answer larger than the hub reads")


@pytest.mark.parametrize("status, headers, body, text, described", [
    (302, {"Location": "https://sso/login"}, b"", "", "302: redirected to https://sso/login"),
    (302, {}, b"", "", "302: redirected to nowhere"),
    (200, HTML, b"<html>", "<html>", "200: text/html, not JSON: <html>"),
    (200, {}, b"<html>", "<html>", "200: no content type, not JSON: <html>"),
    (200, JSON, b"", "", "200: something other than an object with TRACKOR_ID: (empty)"),
    (200, JSON, b"[]", "[]", "200: something other than an object with TRACKOR_ID: []"),
    (401, {}, b"", "", "401: authorization failed"),
    (403, {}, b"x", "Forbidden: ***", "403: Forbidden: ***"),
])
def test_what_an_answer_says_for_status_and_logs(status, headers, body, text, described):
    assert classify(status, headers, body, Shape.CREATED, text).describe() == described


def test_headers_are_found_whatever_their_case_in_a_plain_mapping():
    assert classify(429, {"RETRY-AFTER": "4"}, b"", Shape.CREATED, "").retry_after == 4.0
    assert classify(302, {"location": "/login"}, b"", Shape.CREATED, "").text.endswith("/login")


@pytest.mark.parametrize("sent, timed_out, ambiguous, throttle", [
    (False, False, False, False),   # connection refused: nothing went out
    (True, False, True, False),     # reset after the request went out: it may have landed
    (True, True, True, True),       # a timeout: overload, and it may have landed
])
def test_no_answer_is_transient_and_ambiguous_once_sent(sent, timed_out, ambiguous, throttle):
    answer = no_answer("connection reset", sent, timed_out)
    assert (answer.kind, answer.status, answer.ambiguous, answer.throttle) == (Kind.TRANSIENT, None, ambiguous,
                                                                               throttle)
    assert answer.describe() == "no answer: connection reset" and not answer.delivered


@pytest.mark.parametrize("value, seconds", [
    (None, None), ("", None), ("  ", None), ("soon", None), ("nan", None),
    ("0", 0.0), ("5", 5.0), (" 5 ", 5.0), ("1.5", 1.5), ("-3", 0.0), ("86400", MAX_RETRY_AFTER),
    (formatdate(NOW + 30, usegmt=True), 30.0),
    (formatdate(NOW - 30, usegmt=True), 0.0),
    ("Wed, 99 Foo 2026 99:99:99 GMT", None),
])
def test_retry_after_as_seconds_or_a_date_capped_at_ten_minutes(value, seconds):
    assert parse_retry_after(value, now=lambda: NOW) == seconds


def test_an_answer_is_delivered_only_when_its_kind_says_so():
    assert Answer(Kind.DELIVERED, 200, "").delivered
    assert not Answer(Kind.REFUSED, 200, "page").delivered
