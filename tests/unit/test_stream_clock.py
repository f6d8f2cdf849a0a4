"""Expiry by TTL in stream time (streams/erasure.py StreamClock): pure logic."""

from cartwise.personalization import Interaction, UserHistory
from streams.erasure import MIN_SWEEP_S, StreamClock

DAY = 86400.0


def test_users_expire_by_stream_time_not_wall_clock():
    clock = StreamClock(ttl_s=30 * DAY)
    clock.saw("old", 1_569_888_000.0)  # 2019-10-01: a replay, far behind the wall clock
    clock.saw("new", 1_569_888_000.0 + 10 * DAY)
    assert clock.expired() == []  # stream time is 2019-10-11: nobody is 30 days behind it
    clock.saw("new", 1_569_888_000.0 + 31 * DAY)
    assert clock.expired() == ["old"]


def test_stream_time_never_moves_back_and_late_events_do_not_rejuvenate():
    clock = StreamClock(ttl_s=DAY)
    clock.saw("a", 10 * DAY)
    clock.saw("a", 2 * DAY)  # a late event: the user's newest time stays
    clock.saw("b", 5 * DAY)
    assert clock.now == 10 * DAY and clock.last_seen["a"] == 10 * DAY
    assert clock.expired() == ["b"]


def test_sweeps_are_spaced_in_stream_time():
    clock = StreamClock(ttl_s=DAY)
    clock.saw("a", 0.0)
    clock.saw("b", 2 * DAY)
    assert clock.expired() == ["a"]
    clock.forget(["a"])
    clock.saw("c", 0.0)  # arrives late, already expired, but the next sweep is not due yet
    assert clock.expired() == []
    clock.saw("b", 2 * DAY + max(DAY * 0.01, MIN_SWEEP_S))
    assert clock.expired() == ["c"]


def test_zero_ttl_never_expires():
    clock = StreamClock(ttl_s=0.0)
    clock.saw("a", 0.0)
    clock.saw("b", 1e9)
    assert clock.expired() == []


def test_restore_from_histories_uses_each_users_newest_interaction():
    clock = StreamClock(ttl_s=DAY)
    history = UserHistory([Interaction("e1", "p", "view", 100.0), Interaction("e2", "p", "cart", 5 * DAY)])
    clock.restore([("a", history), ("empty", UserHistory())])
    assert clock.last_seen == {"a": 5 * DAY} and clock.now == 5 * DAY
