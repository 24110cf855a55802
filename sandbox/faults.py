"""Faults on demand and request counters.

``Faults`` holds the knobs (set by flags at start, or by POST /_sandbox/faults) and decides, per API
request, what goes wrong with it. They apply to /api/ paths only; the control API and the page are
never faulted, so a test can always switch faults off again.

Per request, in this order:
  1. down (``down_for_s`` not yet elapsed): the connection is closed without an answer;
  2. ``latency_ms`` of sleep;
  3. one random draw against ``drop_rate``: the connection is closed without an answer -- before
     the request is processed, or after it was processed and committed when ``drop_after_commit``
     is set (the client sees an error although its write happened: what idempotency is for);
  4. one random draw against ``error_rate``: answered ``error_status`` (500 or 503), not processed.
Draws come from one ``random.Random(seed)``, so a given seed gives the same sequence of outcomes.

Counters (``Stats``): every API request counts in "total"; a faulted one in "faulted" (and not in its
kind, since it was not processed -- except drop_after_commit, which was); a refused credential in
"auth_failed"; the rest in its kind: create, read, update, delete, upload, download, info, schema.
A request answered by a rule (sandbox.rules) counts in "ruled" instead, and also in its kind (or
"auth_failed") when the rule has ``after_commit``, since it was processed.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

from sandbox.schema import bad

DOWN, DROP, DROP_AFTER, ERROR = "down", "drop", "drop_after_commit", "error"

KINDS = ("create", "read", "update", "delete", "upload", "download", "info", "schema", "auth_failed",
         "faulted", "ruled", "total")


class Faults:
    """The fault settings and the per-request decision. Thread-safe."""

    def __init__(self, **settings):
        self._lock = threading.Lock()
        self.clear()
        if settings:
            self.update(settings)

    def clear(self):
        with self._lock:
            self.latency_ms = 0.0
            self.error_rate = 0.0
            self.error_status = 500
            self.drop_rate = 0.0
            self.drop_after_commit = False
            self.down_until = 0.0
            self.seed = None
            self._random = random.Random()

    def update(self, settings: dict):
        """Apply any subset of the knobs; a bad value raises SandboxError(400) and changes nothing."""
        if not isinstance(settings, dict):
            raise bad("Faults must be a JSON object")
        known = {"latency_ms", "error_rate", "error_status", "drop_rate", "drop_after_commit",
                 "down_for_s", "seed"}
        unknown = set(settings) - known
        if unknown:
            raise bad("Unknown fault setting(s): %s" % ", ".join(sorted(unknown)))
        checked = {name: _check(name, value) for name, value in settings.items()}
        with self._lock:
            for name, value in checked.items():
                if name == "down_for_s":
                    self.down_until = time.monotonic() + value if value > 0 else 0.0
                elif name == "seed":
                    self.seed = value
                    self._random = random.Random(value)
                else:
                    setattr(self, name, value)

    def settings(self) -> dict:
        with self._lock:
            return {"latency_ms": self.latency_ms, "error_rate": self.error_rate,
                    "error_status": self.error_status, "drop_rate": self.drop_rate,
                    "drop_after_commit": self.drop_after_commit,
                    "down_for_s": max(0.0, round(self.down_until - time.monotonic(), 3)),
                    "seed": self.seed}

    def is_down(self) -> bool:
        with self._lock:
            return time.monotonic() < self.down_until

    def delay(self) -> float:
        with self._lock:
            return self.latency_ms / 1000.0

    def draw(self):
        """DROP, DROP_AFTER, ERROR or None for one request (after the down check and the delay)."""
        with self._lock:
            dropped = self._random.random() < self.drop_rate
            errored = self._random.random() < self.error_rate
            if dropped:
                return DROP_AFTER if self.drop_after_commit else DROP
            return ERROR if errored else None


def _check(name, value):
    if name == "drop_after_commit":
        if not isinstance(value, bool):
            raise bad("drop_after_commit must be true or false")
        return value
    if name == "seed":
        return value if value is None or isinstance(value, (int, str)) else str(value)
    if name == "error_status":
        if value not in (500, 502, 503, 504):
            raise bad("error_status must be 500, 502, 503 or 504")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise bad("%s must be a non-negative number" % name)
    if name in ("error_rate", "drop_rate") and value > 1:
        raise bad("%s is a share between 0 and 1" % name)
    return float(value)


class Stats:
    """Counts of API requests served, by kind (see KINDS). Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = Counter()
        self._in_flight = 0

    def enter(self) -> float:
        """An API request begins: how many are served at once is kept as "in_flight_max"; the
        seconds requests spend being served add up in "busy_ms" (leave() with what this returned)."""
        with self._lock:
            self._in_flight += 1
            if self._in_flight > self._counts["in_flight_max"]:
                self._counts["in_flight_max"] = self._in_flight
        return time.monotonic()

    def leave(self, started: float) -> None:
        with self._lock:
            self._in_flight -= 1
            self._counts["busy_ms"] += int((time.monotonic() - started) * 1000)

    def count(self, *kinds):
        with self._lock:
            for kind in kinds:
                self._counts[kind] += 1

    def snapshot(self) -> dict:
        with self._lock:
            result = {kind: 0 for kind in KINDS}
            result.update(self._counts)
            return result

    def reset(self):
        with self._lock:
            self._counts.clear()
            self._counts["in_flight_max"] = self._in_flight
