"""The adaptive admission limit's controller (grpc_api/admission.py; pure logic, latencies made up): it
rises under a steady latency near the no-load one, falls when latency grows, stays in its bounds, and
admits no more than the limit."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grpc_api.admission import BASELINE_MIN_REQUESTS, INITIAL_LIMIT, WINDOW_REQUESTS, AdaptiveLimit


def run(limit: AdaptiveLimit, latency_s: float, windows: int, concurrency: int | None = None) -> None:
    """``windows`` windows of requests of ``latency_s`` each, keeping ``concurrency`` (default: as many as the
    limit admits) in flight: one finishes, the next starts, as under a steady load; then all finish."""
    held: deque[bool] = deque()
    for _ in range(windows * WINDOW_REQUESTS):
        while len(held) < (concurrency or limit.limit):
            admitted, no_load = limit.try_acquire()
            if not admitted:
                break
            held.append(no_load)
        limit.release(latency_s, held.popleft())
    while held:
        limit.release(latency_s, held.popleft())


def learn_baseline(limit: AdaptiveLimit, latency_s: float) -> None:
    for _ in range(3 * WINDOW_REQUESTS):  # one at a time: every request measures the no-load latency
        limit.release(latency_s, limit.try_acquire()[1])


def test_the_limit_rises_while_latency_stays_at_the_no_load_latency():
    limit = AdaptiveLimit(2, 64, 2.0)
    learn_baseline(limit, 0.005)
    assert limit.baseline_s == pytest.approx(0.005) and limit.limit == INITIAL_LIMIT
    run(limit, 0.006, windows=40)
    assert limit.limit > 2 * INITIAL_LIMIT


def test_the_limit_falls_when_latency_grows_and_rises_again_when_it_recovers():
    limit = AdaptiveLimit(2, 64, 2.0)
    learn_baseline(limit, 0.005)
    run(limit, 0.006, windows=30)
    high = limit.limit
    run(limit, 0.030, windows=30)  # six times the no-load latency: queueing
    low = limit.limit
    assert low < high / 2
    run(limit, 0.006, windows=30)
    assert limit.limit > low


def test_a_latency_double_the_no_load_one_is_within_tolerance_and_six_times_is_not():
    within, beyond = AdaptiveLimit(2, 64, 2.0), AdaptiveLimit(2, 64, 2.0)
    for limit, latency in ((within, 0.010), (beyond, 0.030)):
        learn_baseline(limit, 0.005)
        run(limit, latency, windows=20)
    assert within.limit > INITIAL_LIMIT > beyond.limit


def test_a_request_past_its_deadline_takes_the_limit_down_whatever_its_latency():
    dropping = AdaptiveLimit(2, 64, 2.0)
    learn_baseline(dropping, 0.005)
    run(dropping, 0.006, windows=20)
    before = dropping.limit
    for _ in range(20):  # one drop per window, its latency short: it waited before admission, untimed
        held = [dropping.try_acquire() for _ in range(WINDOW_REQUESTS)]
        dropping.release(0.001, held[0][1], dropped=True)
        for _, no_load in held[1:]:
            dropping.release(0.006, no_load)
    assert dropping.limit < before / 2
    assert dropping.baseline_s >= 0.005  # the dropped requests' 1 ms are no no-load latency


def test_an_idle_load_does_not_raise_the_limit():
    limit = AdaptiveLimit(2, 64, 2.0)
    learn_baseline(limit, 0.005)
    run(limit, 0.005, windows=40, concurrency=1)  # never more than one in flight: the limit is untried
    assert limit.limit == INITIAL_LIMIT


def test_a_few_cold_requests_are_no_baseline_yet():
    limit = AdaptiveLimit(2, 64, 2.0)
    for _ in range(BASELINE_MIN_REQUESTS - 1):
        limit.release(0.5, limit.try_acquire()[1])
    assert limit.baseline_s is None
    limit.release(0.5, limit.try_acquire()[1])
    assert limit.baseline_s == pytest.approx(0.5)


def test_no_baseline_no_change():
    limit = AdaptiveLimit(1, 64, 2.0)
    limit.try_acquire()  # held throughout: every other request finds one in flight, none measures no load
    run(limit, 0.5, windows=4, concurrency=INITIAL_LIMIT - 1)
    assert limit.baseline_s is None and limit.limit == INITIAL_LIMIT


def test_admission_refuses_beyond_the_limit_and_a_release_frees_a_slot():
    limit = AdaptiveLimit(2, 4, 2.0)
    admitted = [limit.try_acquire() for _ in range(5)]
    assert [ok for ok, _ in admitted] == [True] * 4 + [False]
    assert [no_load for _, no_load in admitted[:4]] == [True, True, False, False]  # fewer than 2 in flight
    limit.release(0.01, False)
    assert limit.try_acquire()[0] and not limit.try_acquire()[0]


def test_invalid_bounds_are_refused():
    for args in ((0, 4, 2.0), (5, 4, 2.0), (2, 4, 1.0)):
        with pytest.raises(ValueError):
            AdaptiveLimit(*args)


@given(bounds=st.tuples(st.integers(1, 20), st.integers(0, 50)),
       phases=st.lists(st.tuples(st.floats(0.0005, 2.0), st.integers(1, 40)), min_size=1, max_size=6))
def test_the_limit_never_leaves_its_bounds(bounds, phases):
    low, extra = bounds
    limit = AdaptiveLimit(low, low + extra, 2.0)
    assert low <= limit.limit <= low + extra
    learn_baseline(limit, phases[0][0])
    for latency, concurrency in phases:
        run(limit, latency, windows=3, concurrency=concurrency)
        assert low <= limit.limit <= low + extra and limit.in_flight == 0
