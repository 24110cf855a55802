"""hub.retry: when an item is tried again (RetryPolicy, Backoff) and how many requests may be in
flight (Throttle), with the clock and the randomness injected: no sleeps."""

from __future__ import annotations

import pytest

from hub.answers import Answer, Kind, no_answer
from hub.retry import MAX_SERVER_ERRORS, Backoff, Next, RetryPolicy, RetryState, Throttle

GOOD = Answer(Kind.DELIVERED, 200, "")
E500 = Answer(Kind.SERVER_ERROR, 500, "oops", ambiguous=True)
E503 = Answer(Kind.TRANSIENT, 503, "busy", ambiguous=True, throttle=True)
E429_WAIT = Answer(Kind.TRANSIENT, 429, "slow down", throttle=True, retry_after=30.0)
REFUSED = Answer(Kind.REFUSED, 403, "no")
LOCKED = Answer(Kind.CREDENTIALS, 401, "locked")
RESET = no_answer("connection reset", sent=True)
REFUSED_CONNECTION = no_answer("connection refused", sent=False)


class Clock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def policy(rand=0.5, base=1.0, cap=30.0):
    return RetryPolicy(Backoff(base=base, cap=cap, rand=lambda: rand))


# -- Backoff -------------------------------------------------------------------------------------

@pytest.mark.parametrize("attempt, rand, delay", [
    (0, 0.5, 1.0), (1, 0.5, 2.0), (3, 0.5, 8.0), (10, 0.5, 30.0), (1000, 0.5, 30.0),
    (2, 0.0, 2.0), (2, 1.0, 6.0),
])
def test_backoff_doubles_with_jitter_and_is_capped(attempt, rand, delay):
    assert Backoff(base=1.0, cap=30.0, rand=lambda: rand).delay(attempt) == delay


# -- RetryPolicy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, next_, ambiguous", [
    (E503, Next.RETRY, True),
    (RESET, Next.RETRY, True),
    (REFUSED_CONNECTION, Next.RETRY, False),
    (E500, Next.RETRY, True),
    (E429_WAIT, Next.RETRY, False),
    (REFUSED, Next.REFUSE, False),
    (Answer(Kind.REFUSED, 200, "a page", ambiguous=True), Next.REFUSE, True),
    (LOCKED, Next.STOP, False),
])
def test_one_decision_per_failed_attempt(answer, next_, ambiguous):
    state = RetryState()
    decision = policy().after(state, answer, now=100.0)
    assert (decision.next, state.ambiguous, state.attempts) == (next_, ambiguous, 1)


def test_a_retry_waits_the_backoff_and_at_least_a_retry_after():
    state = RetryState()
    assert policy().after(state, E503, now=100.0).at == 101.0 == state.not_before
    assert policy().after(state, E503, now=200.0).at == 202.0
    assert policy().after(RetryState(), E429_WAIT, now=100.0).at == 130.0


def test_the_same_item_answered_500_five_times_in_a_row_is_refused():
    state, retry = RetryState(), policy()
    decisions = [retry.after(state, E500, now=0.0).next for _ in range(MAX_SERVER_ERRORS)]
    assert decisions == [Next.RETRY] * (MAX_SERVER_ERRORS - 1) + [Next.REFUSE]


def test_another_answer_between_500s_starts_the_count_again():
    state, retry = RetryState(), policy()
    for _ in range(MAX_SERVER_ERRORS - 1):
        retry.after(state, E500, now=0.0)
    retry.after(state, E503, now=0.0)
    assert state.server_errors == 0
    assert [retry.after(state, E500, now=0.0).next for _ in range(MAX_SERVER_ERRORS - 1)] == \
        [Next.RETRY] * (MAX_SERVER_ERRORS - 1)


def test_500s_to_a_read_back_never_refuse_the_item():
    state, retry = RetryState(), policy()
    decisions = {retry.after(state, E500, now=0.0, strike=False).next for _ in range(3 * MAX_SERVER_ERRORS)}
    assert decisions == {Next.RETRY} and state.server_errors == 0 and state.ambiguous


def test_success_forgets_everything():
    state = RetryState()
    policy().after(state, E500, now=0.0)
    RetryPolicy.succeeded(state)
    assert state == RetryState()


# -- Throttle ------------------------------------------------------------------------------------

def test_overload_halves_the_limit_at_most_once_per_window_down_to_one():
    clock = Clock()
    throttle = Throttle(start=16, clock=clock)
    limits = []
    for _ in range(6):
        throttle.on_answer(E503)
        throttle.on_answer(E503)          # the same window: no second halving
        limits.append(throttle.limit)
        clock.now += 1.0
    assert limits == [8, 4, 2, 1, 1, 1]


def test_good_answers_add_about_one_connection_per_round_up_to_sixteen():
    throttle = Throttle(start=1, clock=Clock())
    throttle.on_answer(GOOD)
    assert throttle.limit == 2
    for _ in range(1000):
        throttle.on_answer(GOOD)
    assert throttle.limit == 16


def test_good_answers_raise_the_limit_only_while_every_allowed_connection_is_in_use():
    throttle = Throttle(start=8, clock=Clock())
    for _ in range(100):
        throttle.on_answer(GOOD, in_flight=5)      # a stream that keeps five busy
    assert throttle.limit == 8
    throttle.on_answer(GOOD, in_flight=8)
    assert throttle.limit == 9
    throttle.on_answer(E503, in_flight=2)          # overload lowers it however few are in flight
    assert throttle.limit == 4.5


def test_good_answers_raise_the_limit_only_while_work_waits_for_a_connection():
    throttle = Throttle(start=8, clock=Clock())
    for _ in range(100):
        throttle.on_answer(GOOD, in_flight=8, waiting=False)   # each answer's connection carries on
    assert throttle.limit == 8
    throttle.on_answer(GOOD, in_flight=8, waiting=True)
    assert throttle.limit == 9
    throttle.on_answer(GOOD, in_flight=5, waiting=True)       # work waits, but connections are free
    assert throttle.limit == 9


@pytest.mark.parametrize("answer", [E500, REFUSED, REFUSED_CONNECTION, LOCKED])
def test_answers_that_are_not_overload_leave_the_limit(answer):
    throttle = Throttle(start=8, clock=Clock())
    throttle.on_answer(answer)
    assert throttle.limit == 8


def test_a_timeout_is_overload():
    throttle = Throttle(start=8, clock=Clock())
    throttle.on_answer(no_answer("did not answer in time", sent=True, timed_out=True))
    assert throttle.limit == 4


def test_allowed_counts_what_is_in_flight():
    throttle = Throttle(start=3, clock=Clock())
    assert [throttle.allowed(n) for n in range(5)] == [True, True, True, False, False]


def test_a_retry_after_pauses_every_new_request_until_it_has_passed():
    clock = Clock()
    throttle = Throttle(start=8, clock=clock)
    throttle.on_answer(E429_WAIT)
    assert not throttle.allowed(0) and throttle.wait_hint() == 30.0
    clock.now += 29.9
    assert not throttle.allowed(0)
    clock.now += 0.1
    assert throttle.allowed(0) and throttle.wait_hint() == 0.0


def test_a_shorter_retry_after_does_not_end_a_longer_pause():
    clock = Clock()
    throttle = Throttle(clock=clock)
    throttle.on_answer(E429_WAIT)
    throttle.on_answer(Answer(Kind.TRANSIENT, 503, "", throttle=True, retry_after=1.0))
    clock.now += 5
    assert not throttle.allowed(0)


@pytest.mark.parametrize("start, limit", [(0, 1), (1, 1), (8, 8), (99, 16)])
def test_the_starting_limit_is_kept_between_one_and_sixteen(start, limit):
    assert Throttle(start=start, clock=Clock()).limit == limit


# -- a lookup the script waits for ------------------------------------------------------------------

def failing_then(answers_in_order, value="found"):
    """A call that raises CallFailed with each answer in turn, then returns `value`."""
    from hub.api import CallFailed
    pending = list(answers_in_order)
    calls = []

    def call(*args, **kwargs):
        calls.append((args, kwargs))
        if pending:
            raise CallFailed(pending.pop(0), "GET /api/v3/...")
        return value
    return call, calls


def test_a_lookup_retries_transient_answers_and_honours_retry_after():
    from hub.retry import call_with_retries
    slept = []
    call, calls = failing_then([Answer(Kind.TRANSIENT, 503, "busy", retry_after=3.0),
                                Answer(Kind.SERVER_ERROR, 500, "oops")])
    assert call_with_retries(call, "Integration", base=0.5, sleep=slept.append, fields=["X"]) == "found"
    assert slept == [3.0, 1.0] and calls[0] == (("Integration",), {"fields": ["X"]})


@pytest.mark.parametrize("answer", [Answer(Kind.REFUSED, 403, "no"), Answer(Kind.CREDENTIALS, 401, "no"),
                                    Answer(Kind.TRANSIENT, 429, "later", retry_after=3600.0)])
def test_a_lookup_is_not_retried_when_refused_or_told_to_wait_too_long(answer):
    from hub.api import CallFailed
    from hub.retry import call_with_retries
    slept = []
    call, calls = failing_then([answer])
    with pytest.raises(CallFailed):
        call_with_retries(call, sleep=slept.append)
    assert len(calls) == 1 and slept == []


def test_a_lookup_gives_up_after_its_attempts():
    from hub.api import CallFailed
    from hub.retry import LOOKUP_ATTEMPTS, call_with_retries
    slept = []
    call, calls = failing_then([Answer(Kind.TRANSIENT, None, "reset")] * 10)
    with pytest.raises(CallFailed):
        call_with_retries(call, base=0.5, sleep=slept.append)
    assert len(calls) == LOOKUP_ATTEMPTS and slept == [0.5, 1.0]
