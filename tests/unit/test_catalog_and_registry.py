"""Catalog helpers, the model registry, and catalog batch planning."""

import asyncio
import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from cartwise.catalog import (
    ProductView,
    category_prefixes,
    event_product_text,
    point_id,
    product_payload,
    product_text,
)
from cartwise.events import ProductDelete, ProductUpsert
from cartwise.index import IndexHit
from cartwise.lifecycle import ensure_active, version_number
from cartwise.registry import ModelRegistry, RegistryError
from streams.catalog import embed_upserts, plan_batch, record_deletions

T0 = datetime(2020, 1, 1, tzinfo=timezone.utc)


def up(pid: str, seconds: float = 0, **kw) -> ProductUpsert:
    kw.setdefault("title", f"title {pid}")
    return ProductUpsert(event_id=f"u-{pid}-{seconds}-{kw['title']}", event_time=T0 + timedelta(seconds=seconds),
                         product_id=pid, **kw)


def rm(pid: str, seconds: float = 0) -> ProductDelete:
    return ProductDelete(event_id=f"d-{pid}-{seconds}", event_time=T0 + timedelta(seconds=seconds), product_id=pid)


# --- catalog ---------------------------------------------------------------------------------------------------

def test_category_prefixes():
    assert category_prefixes([]) == []
    assert category_prefixes(["a"]) == ["a"]
    assert category_prefixes(["a", "b", "c"]) == ["a", "a > b", "a > b > c"]


def test_product_text():
    assert product_text("Phone", "Acme", ["electronics", "phone"], "Fast.") == \
        "Phone. brand: Acme. category: electronics > phone. Fast."
    assert product_text("Phone", None, [], None) == "Phone"
    assert product_text("Phone", "", ["x"]) == "Phone. category: x"
    assert product_text("x" * 50, "Acme", [], max_chars=10) == "x" * 10


def test_event_product_text():
    assert event_product_text(up("p", title="Mug", brand="B", category_path=["home"], description="d")) == \
        "Mug. brand: B. category: home. d"


def test_point_id_stable_uuid():
    a = point_id("product-1")
    assert a == point_id("product-1")
    assert a != point_id("product-2")
    assert str(uuid.UUID(a)) == a
    assert uuid.UUID(a).version == 5
    assert point_id("") != point_id(" ")


def test_product_payload():
    event = up("p1", 5, title="Mug", brand="AcMe", category_path=["home", "kitchen"], price=3.5, in_stock=False)
    payload = product_payload(event)
    assert payload["brand"] == "acme"
    assert payload["brand_display"] == "AcMe"
    assert payload["category_prefixes"] == ["home", "home > kitchen"]
    assert payload["price"] == 3.5
    assert payload["in_stock"] is False
    assert payload["updated_at"] == event.event_time.timestamp()
    view = ProductView.from_payload(payload)
    assert view == ProductView("p1", "Mug", "AcMe", ["home", "kitchen"], 3.5, False)


def test_product_payload_without_brand_or_price():
    payload = product_payload(up("p1"))
    assert "brand" not in payload and "price" not in payload
    assert ProductView.from_payload(payload).brand == ""


# --- registry --------------------------------------------------------------------------------------------------

def stage(reg: ModelRegistry, model: bytes = b"onnx-bytes"):
    staging = reg.staging_dir()
    (staging / "model.onnx").write_bytes(model)
    (staging / "tokenizer.json").write_text("{}")
    return staging


def test_publish_versions_and_manifest(tmp_path):
    reg = ModelRegistry(tmp_path / "models")
    m1 = reg.publish(stage(reg, b"one"), dims=8, base="test", max_tokens=64, metrics={"ndcg": 0.5})
    m2 = reg.publish(stage(reg, b"two"), dims=8, base="test", max_tokens=64)
    assert (m1.version, m2.version) == ("v1", "v2")
    assert (m1.number, m2.number) == (1, 2)
    assert reg.versions() == ["v1", "v2"]
    assert m1.sha256 == hashlib.sha256(b"one").hexdigest()
    assert reg.manifest("v1") == m1
    assert reg.manifest("v1").metrics == {"ndcg": 0.5}
    assert (reg.path("v2") / "tokenizer.json").exists()
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".staging")]


def test_publish_missing_file(tmp_path):
    reg = ModelRegistry(tmp_path)
    staging = reg.staging_dir()
    (staging / "model.onnx").write_bytes(b"x")
    with pytest.raises(RegistryError, match="tokenizer.json"):
        reg.publish(staging, dims=8, base="t", max_tokens=8)
    assert reg.versions() == []


def test_verify_detects_altered_model(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.publish(stage(reg), dims=8, base="t", max_tokens=8)
    assert reg.verify("v1").version == "v1"
    (reg.path("v1") / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(RegistryError):
        reg.verify("v1")


def test_activate_and_active(tmp_path):
    reg = ModelRegistry(tmp_path)
    assert reg.active() is None
    reg.publish(stage(reg), dims=8, base="t", max_tokens=8)
    reg.publish(stage(reg), dims=8, base="t", max_tokens=8)
    reg.activate("v1")
    assert reg.active() == "v1"
    reg.activate("v2")
    assert reg.active() == "v2"
    with pytest.raises(RegistryError):
        reg.activate("v3")
    assert reg.active() == "v2"
    assert ModelRegistry(tmp_path).active() == "v2"


def test_lifecycle_candidate_active_retired_and_rollback(tmp_path):
    reg = ModelRegistry(tmp_path)
    for _ in range(3):
        reg.publish(stage(reg), dims=8, base="t", max_tokens=8)
    assert reg.state("v1") == ("candidate", None)
    assert reg.rollback_target() is None
    reg.activate("v1")
    reg.activate("v2")
    reg.hold("v3", "gate: nDCG@10 0.31 < active 0.36 - 0.01")
    assert [reg.state(v)[0] for v in ("v1", "v2", "v3")] == ["retired", "active", "candidate"]
    assert reg.state("v3")[1].startswith("gate:")
    assert reg.rollback_target() == "v1" and reg.active() == "v2"  # naming the target changes nothing
    reg.activate(reg.rollback_target())  # what the swap coordinator does after a rollback's swap
    assert reg.active() == "v1" and reg.state("v2")[0] == "retired"
    assert ModelRegistry(tmp_path).rollback_target() == "v2"  # history survives a new process


def test_a_version_activated_before_the_history_existed_becomes_the_rollback_target(tmp_path):
    reg = ModelRegistry(tmp_path)
    for _ in range(2):
        reg.publish(stage(reg), dims=8, base="t", max_tokens=8)
    (tmp_path / "ACTIVE").write_text("v1\n")  # as written by a registry without lifecycle.json
    reg.activate("v2")
    assert reg.state("v1")[0] == "retired" and reg.rollback_target() == "v1"


def test_garbage_collection_keeps_active_candidates_and_the_rollback_target(tmp_path):
    reg = ModelRegistry(tmp_path)
    for _ in range(5):
        reg.publish(stage(reg), dims=8, base="t", max_tokens=8)
    for version in ("v1", "v2", "v3", "v4"):
        reg.activate(version)
    assert reg.collect_garbage(keep_retired=1) == ["v2", "v1"]
    assert reg.versions() == ["v3", "v4", "v5"]  # v3 rollback target, v4 active, v5 candidate
    reg.activate(reg.rollback_target())
    assert reg.active() == "v3"
    assert reg.collect_garbage(keep_retired=1) == []


def test_ensure_active_activates_what_first_makes_only_when_none_is_active(tmp_path):
    reg = ModelRegistry(tmp_path)
    made = []

    def first():
        made.append(reg.publish(stage(reg), dims=8, base="t", max_tokens=8).version)
        return made[-1]

    assert ensure_active(reg, first) == "v1" == reg.active()
    assert ensure_active(reg, first) == "v1" and made == ["v1"]  # an active version: nothing made
    assert reg.state("v1")[0] == "active"


def test_incomplete_version_dir_is_skipped_but_numbered_past(tmp_path):
    reg = ModelRegistry(tmp_path)
    (tmp_path / "v3").mkdir()
    assert reg.versions() == []
    assert reg.next_version() == "v4"
    with pytest.raises(RegistryError):
        reg.manifest("v3")


@pytest.mark.parametrize("bad", ["1", "v", "version1", "v1a", "V1", "", "v-1"])
def test_version_number_errors(bad):
    with pytest.raises(RegistryError):
        version_number(bad)


def test_version_number():
    assert version_number("v1") == 1
    assert version_number("v12") == 12


def test_path_rejects_non_version(tmp_path):
    with pytest.raises(RegistryError):
        ModelRegistry(tmp_path).path("../etc")


# --- plan_batch ------------------------------------------------------------------------------------------------

class FakeIndex:
    """Holds payloads by point id; only what plan_batch reads."""

    def __init__(self, payloads=(), vectors=None):
        self.points = {point_id(p["product_id"]): p for p in payloads}
        self.vectors = {point_id(pid): v for pid, v in (vectors or {}).items()}
        self.calls = []

    def retrieve(self, name, ids, with_vectors=True):
        self.calls.append((name, list(ids), with_vectors))
        return [IndexHit(i, 0.0, self.points[i], self.vectors.get(i) if with_vectors else None)
                for i in ids if i in self.points]


def test_plan_latest_event_per_product_wins():
    index = FakeIndex()
    events = [up("a", 1, title="old"), up("a", 3, title="new"), up("a", 2, title="mid"), up("b", 1)]
    plan = plan_batch(events, index, "products_v1")
    assert sorted((e.product_id, e.title) for e in plan.upserts) == [("a", "new"), ("b", "title b")]
    assert plan.deletes == []
    assert plan.stale == 2
    assert index.calls[0][0] == "products_v1"
    assert sorted(index.calls[0][1]) == sorted([point_id("a"), point_id("b")])


def test_plan_skips_events_older_than_indexed():
    index = FakeIndex([product_payload(up("a", 100)), product_payload(up("b", 100))])
    plan = plan_batch([up("a", 50, title="stale"), up("b", 100, title="same time"), up("c", 0)], index, "c")
    assert sorted(e.product_id for e in plan.upserts) == ["b", "c"]
    assert plan.stale == 1


def test_plan_delete():
    index = FakeIndex([product_payload(up("a", 10)), product_payload(up("b", 10))])
    plan = plan_batch([up("a", 20), rm("a", 30), rm("b", 5), up("c", 1), rm("c", 0)], index, "c")
    assert plan.deletes == ["a"]
    assert [e.product_id for e in plan.upserts] == ["c"]
    assert plan.stale == 3  # the superseded upsert of a, the stale delete of b, the older delete of c


def test_plan_upsert_after_delete_in_batch():
    plan = plan_batch([rm("a", 1), up("a", 2)], FakeIndex(), "c")
    assert [e.product_id for e in plan.upserts] == ["a"] and plan.deletes == []


def test_plan_empty_batch():
    plan = plan_batch([], FakeIndex(), "c")
    assert (plan.upserts, plan.deletes, plan.stale) == ([], [], 0)


def test_a_deleted_product_stays_deleted_when_an_older_upsert_arrives_late():
    deleted_at = {}
    record_deletions([up("a", 5), rm("a", 30), rm("b", 10), rm("b", 3)], deleted_at)
    assert deleted_at == {"a": T0.timestamp() + 30, "b": T0.timestamp() + 10}
    plan = plan_batch([up("a", 20, title="late, older"), up("b", 10, title="same time"), up("c", 1)], FakeIndex(),
                      "c", deleted_at)
    assert [e.product_id for e in plan.upserts] == ["c"] and plan.stale == 2
    newer = plan_batch([up("a", 31, title="re-listed")], FakeIndex(), "c", deleted_at)
    assert [e.title for e in newer.upserts] == ["re-listed"]


def test_an_upsert_of_unchanged_text_keeps_the_stored_vector_and_a_changed_one_is_embedded_again():
    stored = {"a": np.array([1.0, 0.0], np.float32), "b": np.array([0.0, 1.0], np.float32)}
    index = FakeIndex([product_payload(up("a", 10)), product_payload(up("b", 10))], stored)
    plan = plan_batch([up("a", 20, in_stock=False), up("b", 20, title="renamed"), up("c", 20)], index, "c")
    assert list(plan.known_vectors) == ["a"] and plan.known_vectors["a"] is stored["a"]

    class Bulk:  # encodes text n as the row [n + 10, n + 10]; runs everything inline
        async def encode(self, encoder, texts):
            return np.array([[n + 10.0] * 2 for n in range(len(texts))], np.float32).reshape(-1, 2)

        async def run(self, fn, items):
            return fn(items)

    lexical = type("Lexical", (), {"documents": staticmethod(lambda texts: [len(t) for t in texts])})
    vectors = asyncio.run(embed_upserts(Bulk(), None, lexical, plan.upserts, plan.known_vectors))
    rows = {e.product_id: row.tolist() for e, row in zip(plan.upserts, vectors.dense)}
    assert rows == {"a": [1.0, 0.0], "b": [10.0, 10.0], "c": [11.0, 11.0]} and len(vectors.lexical) == 3
