"""When to try an item again, and how many requests may be in flight at once. Pure logic
with the clock and the randomness injected, so the tests run in microseconds.

- `Backoff`: exponential with jitter, capped.
- `RetryPolicy.after(state, answer, now)`: one decision per failed attempt of one item, from
  the classification in hub.answers: retry at a time, read back first, refuse, or stop
  (credentials).
- `Throttle`: how many requests may be in flight: halved (at most once per window) while
  answers say "overloaded" (429, 503, timeouts), one more per window of good answers, between
  1 and 16; a Retry-After pauses every new request until it has passed.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from hub.answers import Answer, Kind

# The same item answered 500 this many times in a row is refused (SPEC §5).
MAX_SERVER_ERRORS = 5


class Backoff:
    """Exponential backoff with jitter: `base * 2**attempt`, capped at `cap`, times 0.5-1.5."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random):
        self.base, self.cap, self.rand = base, cap, rand

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.base * (2 ** min(attempt, 30))) * (0.5 + self.rand())


class Next(enum.Enum):
    RETRY = "retry"          # try again at `at`
    REFUSE = "refuse"        # quarantine the item with the answer
    STOP = "stop"            # credentials refused: no more sending in this invocation


@dataclass
class RetryState:
    """One item's attempts so far (kept in memory: a new invocation starts afresh)."""

    attempts: int = 0
    server_errors: int = 0      # consecutive 500s
    ambiguous: bool = False     # an attempt may have landed: read back by key before resending
    not_before: float = 0.0     # monotonic time before which it is not tried again


@dataclass(frozen=True)
class Decision:
    next: Next
    at: float = 0.0


class RetryPolicy:
    def __init__(self, backoff: Optional[Backoff] = None, max_server_errors: int = MAX_SERVER_ERRORS):
        self.backoff = backoff or Backoff()
        self.max_server_errors = max_server_errors

    def after(self, state: RetryState, answer: Answer, now: float, strike: bool = True) -> Decision:
        """Update `state` for a failed attempt answered `answer` and say what comes next.
        `strike=False`: the answer was to a read made for the item (a read-back), not to the item
        itself: a 500 there does not count towards refusing the item."""
        state.attempts += 1
        if answer.ambiguous:
            state.ambiguous = True
        if answer.kind is Kind.CREDENTIALS:
            return Decision(Next.STOP)
        if answer.kind is Kind.REFUSED:
            return Decision(Next.REFUSE)
        if answer.kind is Kind.SERVER_ERROR and not strike:
            pass
        elif answer.kind is Kind.SERVER_ERROR:
            state.server_errors += 1
            if state.server_errors >= self.max_server_errors:
                return Decision(Next.REFUSE)
        else:
            state.server_errors = 0
        wait = self.backoff.delay(state.attempts - 1)
        if answer.retry_after is not None:
            wait = max(wait, answer.retry_after)
        state.not_before = now + wait
        return Decision(Next.RETRY, state.not_before)

    @staticmethod
    def succeeded(state: RetryState) -> None:
        state.attempts = state.server_errors = 0
        state.ambiguous = False
        state.not_before = 0.0


@dataclass
class Throttle:
    """The number of requests allowed in flight (additive increase, multiplicative decrease)."""

    start: int = 8
    low: int = 1
    high: int = 16
    window: float = 1.0                 # seconds: at most one decrease per window
    clock: Callable[[], float] = time.monotonic
    limit: float = field(init=False)
    paused_until: float = field(init=False, default=0.0)
    # Until the first sign of overload, one more connection per good answer (the limit doubles
    # each round trip, as TCP's slow start); after it, one more per round trip.
    slow_start: bool = field(init=False, default=True)
    _last_decrease: float = field(init=False, default=-1e9)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.limit = float(min(max(self.start, self.low), self.high))

    def allowed(self, in_flight: int) -> bool:
        """Whether one more request may start now."""
        return in_flight < int(self.limit) and self.clock() >= self.paused_until

    def wait_hint(self) -> float:
        """Seconds until a pause ends (0 when not paused)."""
        return max(0.0, self.paused_until - self.clock())

    def may_grow(self, answer: Answer, in_flight: Optional[int] = None) -> bool:
        """Whether this answer would raise the limit if work waited for a connection: a good
        answer that came while every connection the limit allows was in use."""
        return answer.kind is Kind.DELIVERED and (
            in_flight is None or in_flight >= int(self.limit))

    def on_answer(self, answer: Answer, in_flight: Optional[int] = None, waiting: bool = True) -> None:
        """One answer. `in_flight`: the requests in flight when it came (this one included);
        `waiting`: whether work waited for a connection then. A good answer raises the limit
        only when every connection the limit allows was in use and work waited: a stream that
        keeps fewer busy, or that each answer's connection carries on with, has no use for more
        (and a later burst must not find a limit it never earned, as TCP's window validation
        says)."""
        with self._lock:
            now = self.clock()
            if answer.retry_after:
                self.paused_until = max(self.paused_until, now + answer.retry_after)
            if answer.throttle:
                self.slow_start = False
                if now - self._last_decrease >= self.window:
                    self.limit = max(float(self.low), self.limit / 2)
                    self._last_decrease = now
            elif waiting and self.may_grow(answer, in_flight):
                # One more connection per `limit` good answers: about one per round trip of all.
                step = 1.0 if self.slow_start else 1.0 / self.limit
                self.limit = min(float(self.high), self.limit + step)


# A call a script waits for (a lookup before anything runs): a few quick tries on a transient
# answer, a Retry-After honoured up to this many seconds (longer: the call fails now).
LOOKUP_ATTEMPTS = 3
LOOKUP_RETRY_AFTER_CAP = 10.0


def call_with_retries(function: Callable, *args, base: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                      **kwargs):
    """`function(*args, **kwargs)`, tried up to LOOKUP_ATTEMPTS times while it raises a
    CallFailed whose answer is transient (or a 5xx), waiting `base * 2**attempt` (capped at
    5 s) or the answer's Retry-After; any other failure, or the last, is raised as it is."""
    from hub.api import CallFailed   # the boundary's exception; retry.py itself stays pure
    for attempt in range(LOOKUP_ATTEMPTS):
        try:
            return function(*args, **kwargs)
        except CallFailed as failed:
            answer = failed.answer
            last = attempt == LOOKUP_ATTEMPTS - 1
            if answer.kind not in (Kind.TRANSIENT, Kind.SERVER_ERROR) or last or \
                    (answer.retry_after or 0) > LOOKUP_RETRY_AFTER_CAP:
                raise
            sleep(max(min(5.0, base * (2 ** attempt)), answer.retry_after or 0.0))
