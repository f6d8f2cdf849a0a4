"""Pure logic of model swaps: the journal, the write targets, models.updates messages, bench figures."""

from __future__ import annotations

from types import SimpleNamespace

from cartwise.app.bench.swap import summarize
from cartwise.model_updates import ACTIVATED, ModelUpdate
from cartwise.registry import collection_names
from streams.journal import Backfill, SwapJournal
from streams.targets import WriteTargets


def test_journal_round_trips_and_starts_empty(tmp_path):
    path = tmp_path / "swap.json"
    assert SwapJournal.load(path) == SwapJournal()
    journal = SwapJournal(live=["v2", "v1"], backfill=Backfill(version="v3", offsets={0: 17}, products=17))
    journal.save(path)
    loaded = SwapJournal.load(path)
    assert loaded == journal and loaded.backfill.offsets == {0: 17}  # partition keys survive JSON


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
    assert collection_names("v12") == ("products_v12", "users_v12")


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
