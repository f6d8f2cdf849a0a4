"""Applying catalog events to a version's products collection and its text groups (cartwise/groups.py):
embed product text (dense and BM25), upsert or delete, regroup.

Idempotent and order-safe: within a batch the latest event (by event time) per product wins, an event
older than what the index already holds for that product (payload ``updated_at``) is skipped, and so is
an upsert no newer than the product's deletion (its tombstone: the stream worker keeps every deletion's
event time in a changelog-backed Table, so a deleted product stays deleted when an older upsert arrives
late, and a swap's backfill, which re-reads the catalog topic, does not bring it back).

An upsert of a product whose indexed text is the same (payload text digest) keeps the stored dense vector
instead of being embedded again. Besides the encode it saves (a redelivered batch after a restart, a price
or stock change), this keeps user vectors exact: the int8 encoder quantizes activations per batch, so the
same text embedded beside other texts comes out up to ~0.02 apart, and users built from the first vector
no longer matched their products after a restart re-embedded them (``cartwise bench recovery``: 100-550
of 2,000 users after three kills).

On Qdrant Edge writes stay off the serving loop by size, not by thread (over a Qdrant server each chunk
goes to the worker's index thread instead: streams/index_calls.py): the Qdrant Edge binding holds the GIL in
``EdgeShard.update`` (measured with a 1 ms ticker thread: 2 ticks during a 610 ms upsert of 30,000
points), and so does building its points from ours, so a thread would stall the loop all the same. A
products-shaped point (384-d, BM25 sparse vector, payload) costs about 0.2 ms to write (0.14 of them in
the conversion), so :func:`apply_plan` writes ``WRITE_CHUNK`` points per event-loop turn (about 3.5 ms,
plus their text groups' read and write) and yields between chunks; a 256-event catalog batch written at
once blocked the loop for 50 ms."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from cartwise.catalog import TEXT_DIGEST, event_lexical_text, event_product_text, point_id, product_payload, text_digest
from cartwise.events import ProductDelete, ProductUpsert
from cartwise.groups import delete_products, upsert_products
from cartwise.index import IndexHit, IndexPoint, SparseVector, VectorIndex
from cartwise.lexical import LexicalEncoder
from cartwise.lifecycle import VersionCollections
from encoders.bulk import BulkEncoder
from encoders.runtime import OnnxEncoder, ServingModel
from streams.index_calls import IndexCalls


@dataclass(frozen=True, slots=True)
class CatalogPlan:
    """What a batch will change: upserts to write, product ids to delete, events skipped as stale, and the
    stored (D,) float32 dense vector of each upsert whose product text is already indexed (module doc)."""

    upserts: list[ProductUpsert]
    deletes: list[str]
    stale: int
    known_vectors: dict[str, np.ndarray] = field(default_factory=dict)


def _stored(index: VectorIndex, collection: str, product_ids, with_vectors: bool = False) -> dict[str, IndexHit]:
    """product_id -> the indexed point of those present in ``collection``."""
    return {hit.payload["product_id"]: hit for hit in index.retrieve(
        collection, [point_id(pid) for pid in product_ids], with_vectors=with_vectors)}


def _updated_at(hit: IndexHit | None) -> float:
    return float("-inf") if hit is None else hit.payload.get("updated_at", 0.0)


NO_TOMBSTONES: Mapping[str, float] = {}
NO_VECTORS: Mapping[str, np.ndarray] = {}


def plan_batch(events: list[ProductUpsert | ProductDelete], index: VectorIndex, collection: str,
               deleted_at: Mapping[str, float] = NO_TOMBSTONES) -> CatalogPlan:
    """Reduce a batch to the latest event per product and drop those older than the indexed state, and
    upserts no newer than the product's deletion (``deleted_at``: product_id -> event time, s)."""
    latest: dict[str, ProductUpsert | ProductDelete] = {}
    for event in events:
        current = latest.get(event.product_id)
        if current is None or event.event_time >= current.event_time:
            latest[event.product_id] = event
    stored = _stored(index, collection, latest, with_vectors=True)
    fresh = [e for e in latest.values() if e.event_time.timestamp() >= _updated_at(stored.get(e.product_id))
             and not (isinstance(e, ProductUpsert) and _deleted_since(e, deleted_at))]
    upserts = [e for e in fresh if isinstance(e, ProductUpsert)]
    return CatalogPlan(upserts=upserts, deletes=[e.product_id for e in fresh if isinstance(e, ProductDelete)],
                       stale=len(latest) - len(fresh) + (len(events) - len(latest)),
                       known_vectors=_unchanged_text_vectors(upserts, stored))


def _unchanged_text_vectors(upserts: list[ProductUpsert], stored: Mapping[str, IndexHit]) -> dict[str, np.ndarray]:
    known = {}
    for event in upserts:
        hit = stored.get(event.product_id)
        if hit is not None and hit.vector is not None and \
                hit.payload.get(TEXT_DIGEST) == text_digest(event_product_text(event)):
            known[event.product_id] = hit.vector
    return known


def _deleted_since(event: ProductUpsert, deleted_at: Mapping[str, float]) -> bool:
    deleted = deleted_at.get(event.product_id)
    return deleted is not None and event.event_time.timestamp() <= deleted


def record_deletions(events: list[ProductUpsert | ProductDelete], deleted_at: dict) -> None:
    """Keep the newest deletion time (s) of each product deleted in ``events`` in ``deleted_at``."""
    for event in events:
        if isinstance(event, ProductDelete):
            ts = event.event_time.timestamp()
            if ts > (deleted_at.get(event.product_id) or float("-inf")):
                deleted_at[event.product_id] = ts


@dataclass(frozen=True, slots=True)
class Embedded:
    """The upserts' vectors: ``dense`` (N, D) float32 and ``lexical`` N BM25 sparse vectors."""

    dense: np.ndarray
    lexical: list[SparseVector]


async def embed_upserts(bulk: BulkEncoder, encoder: OnnxEncoder, lexical: LexicalEncoder,
                        upserts: list[ProductUpsert], known: Mapping[str, np.ndarray] = NO_VECTORS) -> Embedded:
    """Dense and BM25 vectors of the upserts' product text, computed on ``bulk``'s threads; the dense
    vector of a product in ``known`` (product_id -> (D,) float32) is taken from there, not encoded."""
    new = [e for e in upserts if e.product_id not in known]
    encoded, sparse = await asyncio.gather(bulk.encode(encoder, [event_product_text(e) for e in new]),
                                           bulk.run(lexical.documents, [event_lexical_text(e) for e in upserts]))
    fresh = iter(encoded)
    dense = np.stack([known[e.product_id] if e.product_id in known else next(fresh) for e in upserts]) \
        if known else encoded
    return Embedded(dense, sparse)


WRITE_CHUNK = 16  # points written per event-loop turn (module doc)


async def apply_plan(plan: CatalogPlan, vectors: Embedded, index: VectorIndex, calls: IndexCalls,
                     collections: VersionCollections) -> None:
    """Write a planned batch into a version's products and their text groups (cartwise/groups.py): upsert
    points with their ``vectors``, delete the deleted ids, ``WRITE_CHUNK`` points per event-loop turn (module
    doc), each chunk and its groups through ``calls`` (streams/index_calls.py).

    Upserts are checked against the index once more first: during a model swap two writers (the catalog
    agent and the backfill) share a collection, and the other may have written a newer event while these
    vectors were computed. Each chunk's check, write and regroup run without yielding to the event loop."""
    for start in range(0, len(plan.upserts), WRITE_CHUNK):
        end = start + WRITE_CHUNK
        await calls.run(_upsert_fresh, plan.upserts[start:end], vectors.dense[start:end], vectors.lexical[start:end],
                        index, collections)
    for start in range(0, len(plan.deletes), WRITE_CHUNK):
        await calls.run(delete_products, index, collections.products, collections.groups,
                        [point_id(pid) for pid in plan.deletes[start:start + WRITE_CHUNK]])


def _upsert_fresh(upserts: list[ProductUpsert], dense: np.ndarray, lexical: list[SparseVector], index: VectorIndex,
                  collections: VersionCollections) -> None:
    """Upsert those of ``upserts`` (with their (N, D) ``dense`` and N ``lexical`` vectors) no older than the
    indexed state of their product, and regroup their old and new texts."""
    stored = _stored(index, collections.products, [e.product_id for e in upserts])
    fresh = [IndexPoint(point_id(e.product_id), vector, product_payload(e), sparse)
             for e, vector, sparse in zip(upserts, dense, lexical)
             if e.event_time.timestamp() >= _updated_at(stored.get(e.product_id))]
    written = {point.payload["product_id"] for point in fresh}
    replaced = [hit.payload[TEXT_DIGEST] for pid, hit in stored.items() if pid in written and TEXT_DIGEST in hit.payload]
    upsert_products(index, collections.products, collections.groups, fresh, replaced)


async def write_catalog(events: list[ProductUpsert | ProductDelete], index: VectorIndex, calls: IndexCalls,
                        model: ServingModel, lexical: LexicalEncoder, bulk: BulkEncoder,
                        deleted_at: Mapping[str, float] = NO_TOMBSTONES) -> CatalogPlan:
    """Plan (with the tombstones ``deleted_at``), embed (on ``bulk``'s threads, off the event loop) and
    apply ``events`` to ``model``'s products and text groups; index calls through ``calls``."""
    plan = await calls.run(plan_batch, events, index, model.products, deleted_at)
    vectors = await embed_upserts(bulk, model.encoder, lexical, plan.upserts, plan.known_vectors)
    await apply_plan(plan, vectors, index, calls, model.collections)
    return plan
