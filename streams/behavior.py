"""Turning updated user histories into user vectors in the users collection."""

from __future__ import annotations

import time

import numpy as np

from cartwise.catalog import point_id
from cartwise.index import IndexPoint, VectorIndex
from cartwise.settings import Personalization
from streams.user_state import UserHistory, user_vector


def product_vectors(index: VectorIndex, collection: str, product_ids: list[str]) -> dict[str, np.ndarray]:
    """product_id -> (D,) vector for those of ``product_ids`` present in ``collection``."""
    hits = index.retrieve(collection, [point_id(pid) for pid in dict.fromkeys(product_ids)], with_vectors=True)
    return {hit.payload["product_id"]: hit.vector for hit in hits}


def write_user_vectors(histories: dict[str, UserHistory], index: VectorIndex, products: str, users: str,
                       params: Personalization) -> set[str]:
    """Recompute and upsert the vectors of ``histories`` (user_id -> history) in one retrieve and one upsert.

    Returns the ids of users with interactions whose product is not in the catalog yet (to retry later).
    A user none of whose products is known yet gets no point."""
    vectors = product_vectors(index, products, [pid for h in histories.values() for pid in h.product_ids()])
    points, pending = [], set()
    for user_id, history in histories.items():
        uv = user_vector(history, vectors, params)
        if uv is None or uv.pending:
            pending.add(user_id)
        if uv is not None:
            payload = {"user_id": user_id, "n": uv.n, "pending": uv.pending, "purchased": history.purchased,
                       "updated_at": time.time()}
            points.append(IndexPoint(point_id(user_id), uv.vector, payload))
    index.upsert(users, points)
    return pending
