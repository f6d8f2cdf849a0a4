"""Applying a planned catalog batch (streams/catalog.py apply_plan) on a real Qdrant Edge shard: a large
batch is written in chunks with the event loop running between them, every point lands, and a newer event
another writer stored meanwhile is not overwritten by an older one."""

import asyncio
from datetime import datetime, timedelta, timezone

import numpy as np

from cartwise.catalog import point_id, product_payload
from cartwise.events import ProductUpsert
from cartwise.groups import upsert_products
from cartwise.index import GROUPS_SCHEMA, PRODUCTS_SCHEMA, EdgeIndex, IndexPoint, SparseVector
from cartwise.lifecycle import VersionCollections
from streams.catalog import WRITE_CHUNK, CatalogPlan, Embedded, apply_plan
from streams.index_calls import IndexCalls

T0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
DIM = 8
COLLECTIONS = VersionCollections("products", "users", "groups")


def up(pid: str, seconds: float, title: str = "") -> ProductUpsert:
    return ProductUpsert(event_id=f"u-{pid}-{seconds}", event_time=T0 + timedelta(seconds=seconds), product_id=pid,
                         title=title or f"title {pid}")


def embedded(n: int) -> Embedded:
    dense = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    return Embedded(dense, [SparseVector([i % 5], [1.0]) for i in range(n)])


def test_a_large_batch_is_written_in_chunks_with_the_loop_running_between_them(tmp_path):
    index = EdgeIndex(tmp_path, search_threads=1)
    index.create_collection("products", DIM, PRODUCTS_SCHEMA)
    index.create_collection("groups", DIM, GROUPS_SCHEMA)
    n, gone = 5 * WRITE_CHUNK + 3, [f"gone{i}" for i in range(2 * WRITE_CHUNK)]
    newer = up("p3", 100, "written meanwhile by the other writer")
    upsert_products(index, "products", "groups", [IndexPoint(point_id(pid), np.ones(DIM, np.float32), product_payload(event))
                                                  for pid, event in [("p3", newer)] + [(g, up(g, 0)) for g in gone]])
    plan = CatalogPlan(upserts=[up(f"p{i}", 1) for i in range(n)], deletes=gone, stale=0)

    async def scenario() -> int:
        turns = 0
        writing = asyncio.create_task(apply_plan(plan, embedded(n), index, IndexCalls(index.remote), COLLECTIONS))
        while not writing.done():
            turns += 1
            await asyncio.sleep(0)
        await writing
        return turns

    turns = asyncio.run(scenario())
    assert turns >= n // WRITE_CHUNK  # the loop ran between the chunks
    assert index.count("products") == n
    kept = index.retrieve("products", [point_id("p3")], with_vectors=False)[0]
    assert kept.payload["title"] == "written meanwhile by the other writer"
    titles = {h.payload["title"] for h in index.retrieve("products", [point_id(f"p{i}") for i in range(n)],
                                                         with_vectors=False)}
    assert len(titles) == n
    assert index.count("groups") == n  # one per title (text); the deleted products' groups are gone
    index.close()
