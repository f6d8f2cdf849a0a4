"""Pure logic of model swaps: the journal, the write targets, models.updates messages, bench figures."""

from __future__ import annotations

from types import SimpleNamespace

from cartwise.app.bench.swap import summarize
from cartwise.lifecycle import ACTIVATED, ModelFollower, ModelUpdate, collection_names, is_version_collection
from streams.journal import JOURNAL_KEY, Backfill, ControlState, SwapJournal, users_done_key
from streams.targets import WriteTargets


def test_journal_round_trips_and_starts_empty():
    state = ControlState()
    assert state.journal == SwapJournal()
    journal = SwapJournal(live=["v2", "v1"], backfill=Backfill(version="v3", offsets={0: 17}, products=17))
    state.apply(JOURNAL_KEY, journal.encode())
    assert state.journal == journal and state.journal.backfill.offsets == {0: 17}  # partition keys survive JSON


def test_control_state_keeps_the_latest_record_per_key_and_drops_tombstones():
    state = ControlState()
    first, second = SwapJournal(live=["v1"]), SwapJournal(live=["v1"], backfill=Backfill(version="v2"))
    state.apply(JOURNAL_KEY, first.encode())
    assert state.journal == first
    state.apply(JOURNAL_KEY, second.encode())  # the cached journal is replaced, not kept
    assert state.journal == second
    state.apply(JOURNAL_KEY, None)
    assert state.journal == SwapJournal()


def test_users_done_is_per_attempt_and_old_attempts_are_removable():
    state = ControlState()
    for attempt, partition in (("a1", 0), ("a1", 3), ("a2", 1)):
        state.apply(users_done_key(attempt, partition), b"worker")
    state.apply(JOURNAL_KEY, SwapJournal().encode())
    assert state.users_done("a1") == {0, 3} and state.users_done("a2") == {1} and state.users_done("a3") == set()
    assert sorted(state.done_keys_other_than("a2")) == [users_done_key("a1", 0), users_done_key("a1", 3)]
    assert len(state.done_keys_other_than(None)) == 3
    state.apply(users_done_key("a1", 0), None)
    assert state.users_done("a1") == {3}


def test_a_new_backfill_is_a_new_attempt():
    assert Backfill(version="v2").attempt != Backfill(version="v2").attempt


def test_write_targets_order_and_keep_only():
    targets = WriteTargets()
    for version, number in (("v3", 3), ("v10", 10), ("v1", 1)):
        targets.add(SimpleNamespace(version=version, number=number))
    assert targets.versions() == ["v1", "v3", "v10"]
    targets.keep_only({"v10", "v1"})
    assert targets.versions() == ["v1", "v10"] and targets.get("v3") is None


def test_model_update_round_trip_and_rejects_garbage():
    update = ModelUpdate(kind=ACTIVATED, version="v4", previous="v3", reason="gate passed")
    assert ModelUpdate.decode(update.encode()) == update
    assert ModelUpdate.decode(b"not json") is None
    assert ModelUpdate.decode(b'{"kind": "explode", "version": "v1"}') is None


def test_collection_names():
    assert collection_names("v12") == ("products_v12", "users_v12", "groups_v12")
    assert collection_names("v12").groups == "groups_v12"
    assert all(map(is_version_collection, collection_names("v12")))
    assert not any(map(is_version_collection, ["products", "users_v", "products_v1_old", "orders_v1"]))


class FakeModel:
    def __init__(self, version):
        self.version, self.warmed = version, 0

    def warm_up(self):
        self.warmed += 1


class FakeHolder:
    def __init__(self, model):
        self.current = model

    def swap(self, model):
        previous, self.current = self.current, model
        return previous


class FakeIndex:
    def __init__(self, names):
        self.names = set(names)

    async def has_collection(self, name):
        return name in self.names


def follower(active, index, preloaded=lambda version: None):
    """A ModelFollower over fakes (its Kafka consumer is never started) and the list of versions it loads."""
    registry, loads = SimpleNamespace(active=lambda: active[0]), []
    holder = FakeHolder(FakeModel("v1"))

    def load(version):
        loads.append(version)
        return FakeModel(version)

    return ModelFollower(SimpleNamespace(), registry, holder, index, load, preloaded), holder, loads


async def test_follower_switches_to_the_registrys_active_version_and_keeps_the_previous_loaded():
    active = ["v2"]
    model_follower, holder, loads = follower(active, FakeIndex(collection_names("v1") + collection_names("v2")))
    v1 = holder.current
    await model_follower.sync()
    assert holder.current.version == "v2" and holder.current.warmed == 1 and loads == ["v2"]
    active[0] = "v1"  # a rollback: the previous version switches back without loading
    await model_follower.sync()
    assert holder.current is v1 and loads == ["v2"]


async def test_follower_stays_without_the_versions_collections_and_uses_a_preloaded_model():
    active, preloaded = ["v2"], FakeModel("v2")
    model_follower, holder, loads = follower(active, FakeIndex(collection_names("v1")),
                                             lambda version: preloaded if version == "v2" else None)
    await model_follower.sync()
    assert holder.current.version == "v1" and loads == []
    model_follower.index.names.update(collection_names("v2"))
    await model_follower.sync()
    assert holder.current is preloaded and preloaded.warmed == 0 and loads == []


def record(start, version, index=None, error=None, latency=1.0):
    return {"start": start, "latency_ms": None if error else latency, "model_version": version,
            "index_version": index or (collection_names(version)[0] if version else None), "error": error}


def test_summarize_splits_phases_and_counts_mixed_answers():
    records = [record(0.0, "v1", latency=2.0), record(1.5, "v1", latency=4.0), record(1.6, "v2", "products_v1"),
               record(2.5, None, error="UNAVAILABLE"), record(3.0, "v2", latency=3.0)]
    figures = summarize(records, requested=1.0, switched=2.0)
    assert figures["requests"] == 5 and figures["errors"] == 1 and figures["mixed_version"] == 1
    assert (figures["requests_before"], figures["requests_during"], figures["requests_after"]) == (1, 2, 1)
    assert figures["p99_ms_before"] == 2.0 and figures["answers_by_version"] == {"v1": 2, "v2": 2}
