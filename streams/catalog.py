"""Applying catalog events to the products collection: embed product text, upsert or delete.

Idempotent and order-safe: within a batch the latest event (by event time) per product wins, and an
event older than what the index already holds for that product (payload ``updated_at``) is skipped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cartwise.catalog import event_product_text, point_id, product_payload
from cartwise.events import ProductDelete, ProductUpsert
from cartwise.index import IndexPoint, VectorIndex
from encoders.runtime import OnnxEncoder


@dataclass(frozen=True, slots=True)
class CatalogPlan:
    """What a batch will change: upserts to embed, product ids to delete, events skipped as stale."""

    upserts: list[ProductUpsert]
    deletes: list[str]
    stale: int


def plan_batch(events: list[ProductUpsert | ProductDelete], index: VectorIndex, collection: str) -> CatalogPlan:
    """Reduce a batch to the latest event per product and drop those older than the indexed state."""
    latest: dict[str, ProductUpsert | ProductDelete] = {}
    for event in events:
        current = latest.get(event.product_id)
        if current is None or event.event_time >= current.event_time:
            latest[event.product_id] = event
    stored = {hit.payload["product_id"]: hit.payload.get("updated_at", 0.0)
              for hit in index.retrieve(collection, [point_id(pid) for pid in latest], with_vectors=False)}
    fresh = [e for e in latest.values() if e.event_time.timestamp() >= stored.get(e.product_id, float("-inf"))]
    return CatalogPlan(upserts=[e for e in fresh if isinstance(e, ProductUpsert)],
                       deletes=[e.product_id for e in fresh if isinstance(e, ProductDelete)],
                       stale=len(latest) - len(fresh) + (len(events) - len(latest)))


def embed_upserts(encoder: OnnxEncoder, upserts: list[ProductUpsert]) -> np.ndarray:
    """(N, D) float32 product vectors of the upserts' product text."""
    return encoder.encode([event_product_text(e) for e in upserts])


def apply_plan(plan: CatalogPlan, vectors: np.ndarray, index: VectorIndex, collection: str) -> None:
    """Write a planned batch: upsert points with ``vectors`` (N, D) float32, delete the deleted ids."""
    index.upsert(collection, [IndexPoint(point_id(e.product_id), vec, product_payload(e))
                              for e, vec in zip(plan.upserts, vectors)])
    index.delete(collection, [point_id(pid) for pid in plan.deletes])
