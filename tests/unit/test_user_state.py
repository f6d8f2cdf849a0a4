"""UserHistory.apply and the decayed, weighted user vector."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartwise.events import BehaviorEvent
from cartwise.personalization import UserHistory, UserPoint, UserVector, accumulate, user_vector
from cartwise.settings import Personalization

T0 = datetime(2019, 10, 1, tzinfo=timezone.utc)


def ev(event_id: str, product_id: str, event_type: str = "view", seconds: float = 0.0) -> BehaviorEvent:
    return BehaviorEvent(event_id=event_id, event_time=T0 + timedelta(seconds=seconds), event_type=event_type,
                         user_id="u1", product_id=product_id)


def unit(*xs) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


PARAMS = Personalization(half_life_s=3600.0, weight_purchase=1.0, weight_cart=0.6, weight_view=0.2, max_history=50)


def test_duplicate_event_is_idempotent():
    h = UserHistory()
    assert h.apply(ev("e1", "p1", "purchase"), 10) is True
    before = h.to_json()
    assert h.apply(ev("e1", "p1", "purchase"), 10) is False
    assert h.to_json() == before
    assert len(h.interactions) == 1 and h.purchased == ["p1"]


def test_out_of_order_event_lands_in_time_order():
    h = UserHistory()
    h.apply(ev("a", "p1", seconds=10), 10)
    h.apply(ev("c", "p3", seconds=30), 10)
    assert h.apply(ev("b", "p2", seconds=20), 10) is True
    assert [i.event_id for i in h.interactions] == ["a", "b", "c"]
    assert [i.ts for i in h.interactions] == sorted(i.ts for i in h.interactions)


def test_bounded_history_keeps_most_recent():
    h = UserHistory()
    for k in range(7):
        h.apply(ev(f"e{k}", f"p{k}", seconds=k), 3)
    assert [i.event_id for i in h.interactions] == ["e4", "e5", "e6"]
    # an event older than a full history changes nothing
    assert h.apply(ev("old", "p-old", seconds=-100), 3) is False
    assert [i.event_id for i in h.interactions] == ["e4", "e5", "e6"]
    # a newer one pushes out the oldest
    assert h.apply(ev("new", "p-new", seconds=100), 3) is True
    assert [i.event_id for i in h.interactions] == ["e5", "e6", "new"]


def test_old_purchase_still_recorded_in_purchased():
    h = UserHistory()
    for k in range(3):
        h.apply(ev(f"e{k}", f"p{k}", seconds=k), 3)
    assert h.apply(ev("old", "p-old", "purchase", seconds=-100), 3) is True
    assert "p-old" in h.purchased
    assert "p-old" not in h.product_ids()


def test_purchases_recorded_once_and_views_not():
    h = UserHistory()
    h.apply(ev("e1", "p1", "purchase", 1), 10)
    h.apply(ev("e2", "p2", "view", 2), 10)
    h.apply(ev("e3", "p3", "cart", 3), 10)
    h.apply(ev("e4", "p1", "purchase", 4), 10)
    assert h.purchased == ["p1"]
    assert h.product_ids() == ["p1", "p2", "p3"]


def test_redelivery_after_dedup_window_is_still_idempotent():
    h = UserHistory()
    h.apply(ev("x", "px", seconds=100), 3)
    h.apply(ev("y", "py", seconds=200), 3)
    for k in range(12):  # older events: the first fills the history, the rest fall off but fill `seen`
        h.apply(ev(f"old{k}", f"po{k}", seconds=k), 3)
    assert "x" not in h.seen
    h.apply(ev("x", "px", seconds=100), 3)
    assert [i.event_id for i in h.interactions].count("x") == 1


def test_json_round_trip():
    h = UserHistory()
    h.apply(ev("e1", "p1", "purchase", 5), 10)
    h.apply(ev("e2", "p2", "view", 1), 10)
    data = h.to_json()
    back = UserHistory.from_json(data)
    assert back == h
    assert back.to_json() == data
    assert UserHistory.from_json(None) == UserHistory()
    # the restored history still deduplicates
    assert back.apply(ev("e1", "p1", "purchase", 5), 10) is False


def test_json_round_trip_through_json_text():
    import json

    h = UserHistory()
    h.apply(ev("e1", "p1", "cart", 1.5), 10)
    assert UserHistory.from_json(json.loads(json.dumps(h.to_json()))) == h


def test_user_vector_hand_computed():
    h = UserHistory()
    h.apply(ev("e1", "A", "view", 0), 50)         # one half-life before the last: 0.2 * 0.5 = 0.1
    h.apply(ev("e2", "B", "purchase", 3600), 50)  # the last: 1.0 * 1
    vecs = {"A": unit(1, 0, 0), "B": unit(0, 1, 0)}
    uv = user_vector(h, vecs, PARAMS)
    expected = np.array([0.1, 1.0, 0.0]) / np.sqrt(0.1 ** 2 + 1.0)
    np.testing.assert_allclose(uv.vector, expected, rtol=1e-6)
    assert uv.vector.dtype == np.float32
    assert (uv.n, uv.pending) == (2, 0)
    assert np.linalg.norm(uv.vector) == pytest.approx(1.0, abs=1e-6)


def test_user_vector_weights_by_type_same_time():
    h = UserHistory()
    h.apply(ev("e1", "A", "cart", 0), 50)
    h.apply(ev("e2", "B", "view", 0), 50)
    uv = user_vector(h, {"A": unit(1, 0), "B": unit(0, 1)}, PARAMS)
    np.testing.assert_allclose(uv.vector, np.array([0.6, 0.2]) / np.hypot(0.6, 0.2), rtol=1e-6)


def test_unknown_products_are_pending():
    h = UserHistory()
    h.apply(ev("e1", "A", "view", 0), 50)
    h.apply(ev("e2", "ghost", "purchase", 10), 50)
    h.apply(ev("e3", "ghost2", "view", 20), 50)
    uv = user_vector(h, {"A": unit(1, 1)}, PARAMS)
    assert (uv.n, uv.pending) == (1, 2)
    # decay is measured from the latest *known* interaction, so the lone vector is unchanged
    np.testing.assert_allclose(uv.vector, unit(1, 1), rtol=1e-6)


def test_none_when_nothing_known():
    assert user_vector(UserHistory(), {"A": unit(1, 0)}, PARAMS) is None
    h = UserHistory()
    h.apply(ev("e1", "ghost", "view", 0), 50)
    assert user_vector(h, {"A": unit(1, 0)}, PARAMS) is None


def test_opposite_vectors_cancel_to_none():
    h = UserHistory()
    h.apply(ev("e1", "A", "view", 0), 50)
    h.apply(ev("e2", "B", "view", 0), 50)
    assert user_vector(h, {"A": unit(1, 0), "B": unit(-1, 0)}, PARAMS) is None


VECS = {f"p{k}": unit(*np.random.default_rng(k).normal(size=6)) for k in range(5)}

events_strategy = st.lists(
    st.tuples(st.sampled_from(sorted(VECS) + ["ghost"]), st.sampled_from(["purchase", "cart", "view"]),
              st.integers(0, 20_000)),
    min_size=1, max_size=12,
).map(lambda rows: [ev(f"e{k}", pid, typ, ts) for k, (pid, typ, ts) in enumerate(rows)])


@settings(max_examples=60, deadline=None)
@given(events=events_strategy, data=st.data(), max_history=st.integers(1, 15))
def test_user_vector_is_order_independent(events, data, max_history):
    shuffled = data.draw(st.permutations(events))
    a, b = UserHistory(), UserHistory()
    for e in events:
        a.apply(e, max_history)
    for e in shuffled:
        b.apply(e, max_history)
    if len(events) <= 4 * max_history:  # within the dedup window a redelivery changes nothing
        assert b.apply(shuffled[0], max_history) is False
    assert a.interactions == b.interactions
    assert sorted(a.purchased) == sorted(b.purchased)
    ua, ub = user_vector(a, VECS, PARAMS), user_vector(b, VECS, PARAMS)
    assert (ua is None) == (ub is None)
    if ua is not None:
        np.testing.assert_allclose(ua.vector, ub.vector, rtol=1e-6, atol=1e-7)
        assert (ua.n, ua.pending) == (ub.n, ub.pending)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABCD"), st.sampled_from(["view", "cart", "purchase"]),
                          st.integers(0, 20_000)), min_size=1, max_size=30))
def test_incremental_accumulate_equals_rebuild_from_history(rows):
    vecs = {"A": unit(1, 0, 0), "B": unit(0, 1, 0), "C": unit(0, 0, 1), "D": unit(1, 1, 1)}
    history, state = UserHistory(), None
    for k, (pid, kind, seconds) in enumerate(rows):  # arrival order is not time order
        history.apply(ev(f"e{k}", pid, kind, seconds), 1000)
        kept = history.find(f"e{k}")
        state = accumulate(state, [(kept, vecs[pid])], 0, PARAMS)
    rebuilt = user_vector(history, vecs, PARAMS)
    assert (state is None) == (rebuilt is None)
    if rebuilt is not None:
        np.testing.assert_allclose(state.vector, rebuilt.vector, atol=1e-5)
        assert state.n == rebuilt.n == len(rows)
        assert state.t_ref == rebuilt.t_ref


def test_unknown_products_are_counted_pending_incrementally():
    h = UserHistory()
    h.apply(ev("e1", "A", "cart", 10), 10)
    state = accumulate(None, [(h.find("e1"), unit(1, 0))], missing=2, params=PARAMS)
    assert state.pending == 2 and state.n == 1
    assert accumulate(None, [], missing=1, params=PARAMS) is None


def test_user_point_payload_round_trip():
    state = UserVector(np.array([0.6, 0.8], dtype=np.float32), 2.5, 1700000000.0, 7, 1)
    point = UserPoint("u1", state, ("p1", "p2"))
    decoded = UserPoint.from_payload(point.to_payload(), state.vector)
    assert (decoded.user_id, decoded.purchased) == ("u1", ("p1", "p2"))
    assert (decoded.state.n, decoded.state.pending, decoded.state.norm, decoded.state.t_ref) == (7, 1, 2.5, 1.7e9)
    np.testing.assert_array_equal(decoded.state.vector, state.vector)
    with pytest.raises(KeyError):
        UserPoint.from_payload({"product_id": "p1"}, state.vector)

