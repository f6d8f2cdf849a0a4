"""User vectors written by the behavior agent's logic (streams/behavior.py) into the real Qdrant Edge
engine: however a crash splits the history write from the vector write, the stored vector counts each
event once and equals a rebuild from the history."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from cartwise.catalog import point_id
from cartwise.events import BehaviorEvent
from cartwise.index import CollectionSchema, EdgeIndex, IndexPoint
from cartwise.personalization import UserHistory, user_vector
from cartwise.settings import Personalization
from streams.behavior import DecodedHistories, UserUpdate, update_user_vectors
from streams.user_points import UserPoints

T0 = datetime(2019, 10, 1, tzinfo=timezone.utc)
PARAMS = Personalization(half_life_s=3600.0, max_history=4)
DIM = 6
_RAW = np.random.default_rng(0).normal(size=(8, DIM)).astype(np.float32)
VECTORS = {f"p{k}": v / np.linalg.norm(v) for k, v in enumerate(_RAW)}


@pytest.fixture
def index(tmp_path):
    idx = EdgeIndex(tmp_path)
    idx.create_collection("products", DIM, CollectionSchema())
    idx.create_collection("users", DIM, CollectionSchema())
    idx.upsert("products", [IndexPoint(point_id(pid), v, {"product_id": pid}) for pid, v in VECTORS.items()])
    yield idx
    idx.close()


def events(*specs) -> list[BehaviorEvent]:
    return [BehaviorEvent(event_id=f"e{n}", event_type=kind, user_id="u", product_id=pid,
                          event_time=T0 + timedelta(minutes=n)) for n, pid, kind in specs]


def apply(history: UserHistory, batch: list[BehaviorEvent]) -> UserUpdate:
    """What the agent does with a batch for one user (UserHistory.apply of each event)."""
    update = UserUpdate.of(history)
    for event in batch:
        update.history.apply(event, PARAMS.max_history)
    return update


def write(index, update: UserUpdate, points: UserPoints | None = None) -> None:
    """One batch's vector write; a new (empty) cache unless ``points`` is given, as after a restart."""
    update_user_vectors({"u": update}, index, points or UserPoints(index, 100), "products", "users", PARAMS)


def stored(index):
    """The point as the index holds it (read past any cache)."""
    return UserPoints(index, 100).get("users", ["u"])["u"]


def assert_is_rebuild(index, history: UserHistory) -> None:
    expected = user_vector(history, VECTORS, PARAMS)
    point = stored(index)
    np.testing.assert_allclose(point.state.vector, expected.vector, atol=1e-5)
    assert point.state.n == expected.n and point.history == history.digest()


FIRST = events((0, "p0", "view"), (1, "p1", "cart"))
SECOND = events((2, "p2", "purchase"), (3, "p1", "view"))


def test_batches_fold_into_what_a_rebuild_gives(index):
    first = apply(UserHistory(), FIRST)
    write(index, first)
    second = apply(UserHistory.from_json(first.history.to_json()), SECOND)
    write(index, second)
    assert_is_rebuild(index, second.history)


def test_redelivery_after_a_crash_between_the_history_and_the_vector_counts_once(index):
    first = apply(UserHistory(), FIRST)
    write(index, first)
    table = apply(UserHistory.from_json(first.history.to_json()), SECOND).history.to_json()  # Table written
    # crash before the vector write; the batch comes again: every event is a duplicate of the Table's
    redelivered = apply(UserHistory.from_json(table), SECOND)
    assert redelivered.added() == [] and redelivered.before == redelivered.history.digest()
    write(index, redelivered)
    assert_is_rebuild(index, redelivered.history)


def test_redelivery_after_both_writes_changes_nothing(index):
    first = apply(UserHistory(), FIRST)
    write(index, first)
    second = apply(UserHistory.from_json(first.history.to_json()), SECOND)
    write(index, second)
    before = stored(index)
    write(index, apply(UserHistory.from_json(second.history.to_json()), SECOND))
    np.testing.assert_array_equal(stored(index).state.vector, before.state.vector)
    assert stored(index).state.n == before.state.n == 4


def test_vector_written_but_history_lost_counts_once(index):
    """The other order: the vector was written, the Table write never reached the changelog."""
    first = apply(UserHistory(), FIRST)
    write(index, first)
    write(index, apply(UserHistory.from_json(first.history.to_json()), SECOND))
    again = apply(UserHistory.from_json(first.history.to_json()), SECOND)  # the Table still has FIRST only
    assert len(again.added()) == 2
    write(index, again)
    assert_is_rebuild(index, again.history)


def test_interactions_a_full_history_pushes_out_leave_the_vector(index):
    history = UserHistory()
    for n in range(7):  # max_history 4: three interactions are pushed out
        update = apply(history, events((n, f"p{n}", "cart")))
        assert [i.product_id for i in update.removed()] == ([f"p{n - 4}"] if n >= 4 else [])
        write(index, update)
        history = update.history
    assert len(history.interactions) == PARAMS.max_history
    assert_is_rebuild(index, history)


class CountingIndex:
    """The index, counting the product vectors read (the fold's cost)."""

    def __init__(self, index) -> None:
        self.index, self.read = index, 0

    def retrieve(self, name, ids, with_vectors=True, with_payload=True):
        self.read += len(ids) if name == "products" else 0
        return self.index.retrieve(name, ids, with_vectors, with_payload)


def test_at_the_cap_a_batch_reads_the_vectors_of_what_it_adds_and_pushes_out_not_the_whole_history(index):
    points = UserPoints(index, 100)
    history = UserHistory()
    for n in range(4):  # at minutes 0, 2, 4, 6: the history is full
        update = apply(history, events((2 * n, f"p{n}", "view")))
        write(index, update, points)
        history = update.history
    counting = CountingIndex(index)
    # e1 (p4) is kept when it comes (it pushes out e0) and pushed out again by e7 in the same batch; e8 pushes
    # out e2 (p1): the batch adds p5 and p6 and takes out p0 and p1
    update = apply(history, events((1, "p4", "cart"), (7, "p5", "purchase"), (8, "p6", "view")))
    assert [i.product_id for i in update.added()] == ["p5", "p6"]
    assert [i.product_id for i in update.removed()] == ["p0", "p1"]
    update_user_vectors({"u": update}, counting, points, "products", "users", PARAMS)
    assert counting.read == 4
    assert_is_rebuild(index, update.history)


def test_a_long_run_of_full_history_batches_stays_a_rebuild(index):
    rng = np.random.default_rng(1)
    points, history, n = UserPoints(index, 100), UserHistory(), 0
    for _ in range(300):
        batch = []
        for _ in range(int(rng.integers(1, 4))):
            kind = str(rng.choice(["view", "cart", "purchase"]))
            batch.append((n + int(rng.integers(-3, 2)), f"p{int(rng.integers(0, 8))}", kind))
            n += 1
        update = apply(history, [BehaviorEvent(event_id=f"e{k}-{m}", event_type=kind, user_id="u", product_id=pid,
                                               event_time=T0 + timedelta(minutes=m))
                                 for k, (m, pid, kind) in enumerate(batch, start=n)])
        write(index, update, points)
        history = update.history
    assert_is_rebuild(index, history)


def test_batches_through_one_cache_store_what_a_rebuild_gives_and_read_nothing_back(index):
    points = UserPoints(index, 100)
    first = apply(UserHistory(), FIRST)
    write(index, first, points)
    write(index, apply(UserHistory.from_json(first.history.to_json()), SECOND), points)
    assert points.hits == 1 and points.misses == 1  # only the first batch read the index
    assert_is_rebuild(index, apply(apply(UserHistory(), FIRST).history, SECOND).history)
    assert points.get("users", ["u"])["u"].history == stored(index).history


def test_the_cache_keeps_the_most_recently_used_and_forgets_deleted_users(index):
    points = UserPoints(index, capacity=1)
    for user in ("a", "b"):
        update = apply(UserHistory(), FIRST)
        update_user_vectors({user: update}, index, points, "products", "users", PARAMS)
    hits, misses = points.hits, points.misses
    points.get("users", ["a", "b"])
    assert (points.hits - hits, points.misses - misses) == (1, 1)  # b was cached, a had been pushed out
    points.delete("users", ["a", "b"])
    assert points.get("users", ["a", "b"]) == {} and UserPoints(index, 1).get("users", ["a", "b"]) == {}


def test_a_decoded_history_is_reused_only_while_the_table_holds_the_value_it_was_written_as():
    decoded = DecodedHistories(capacity=1)
    history = apply(UserHistory(), FIRST).history
    value = history.to_json()
    decoded.put("u", value, history)
    assert decoded.take("u", value) is history
    assert decoded.take("u", value) is not history  # taken for a batch: gone until written back
    decoded.put("u", value, history)
    assert decoded.take("u", dict(value)) is not history  # the Table holds another value (recovered, rewritten)
    decoded.put("u", value, history)
    decoded.put("v", value, history)  # capacity 1: u is pushed out
    assert decoded.take("u", value) is not history
    decoded.discard(["v"])
    assert decoded.take("v", value) is not history
    assert decoded.take("w", None).interactions == []


def test_a_history_written_to_the_table_is_not_changed_by_later_events():
    history = apply(UserHistory(), FIRST).history
    value = history.to_json()
    apply(history, SECOND)
    assert value == apply(UserHistory(), FIRST).history.to_json()
