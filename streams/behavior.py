"""Turning behavior into user vectors in the users collection (incrementally, or rebuilt from history)."""

from __future__ import annotations

import numpy as np

from cartwise.catalog import ProductView, point_id
from cartwise.index import IndexPoint, VectorIndex
from cartwise.personalization import Interaction, UserHistory, UserPoint, UserVector, accumulate, user_vector
from cartwise.settings import Personalization


def product_vectors(index: VectorIndex, collection: str, product_ids: list[str]) -> dict[str, np.ndarray]:
    """product_id -> (D,) vector for those of ``product_ids`` present in ``collection``."""
    hits = index.retrieve(collection, [point_id(pid) for pid in dict.fromkeys(product_ids)], with_vectors=True)
    return {ProductView.from_payload(hit.payload).product_id: hit.vector for hit in hits}


def stored_user_vectors(index: VectorIndex, users: str, user_ids: list[str]) -> dict[str, UserVector]:
    """The users' current :class:`UserVector` state as stored in ``users``."""
    hits = index.retrieve(users, [point_id(u) for u in user_ids], with_vectors=True)
    points = (UserPoint.from_payload(h.payload, h.vector) for h in hits)
    return {p.user_id: p.state for p in points}


def _write(index: VectorIndex, users: str, computed: dict[str, tuple[UserVector | None, UserHistory]]) -> set[str]:
    """Upsert the computed vectors; returns the users still waiting on a product (or with no vector yet)."""
    points = [IndexPoint(point_id(user_id), uv.vector, UserPoint(user_id, uv, tuple(history.purchased)).to_payload())
              for user_id, (uv, history) in computed.items() if uv is not None]
    index.upsert(users, points)
    return {user_id for user_id, (uv, _) in computed.items() if uv is None or uv.pending}


def update_user_vectors(updates: dict[str, tuple[UserHistory, list[Interaction]]], index: VectorIndex,
                        products: str, users: str, params: Personalization) -> set[str]:
    """Fold each user's new interactions into their stored vector: one retrieve of user states, one of
    product vectors, one upsert, whatever the histories' lengths.

    ``updates`` maps user_id -> (history after the events, interactions the events added). Returns the ids
    of users with interactions whose product is not in the catalog yet (to rebuild later)."""
    previous = stored_user_vectors(index, users, list(updates))
    vectors = product_vectors(index, products, [i.product_id for _, added in updates.values() for i in added])
    computed = {}
    for user_id, (history, added) in updates.items():
        known = [(i, vectors[i.product_id]) for i in added if i.product_id in vectors]
        computed[user_id] = (accumulate(previous.get(user_id), known, len(added) - len(known), params), history)
    return _write(index, users, computed)


def rebuild_user_vectors(histories: dict[str, UserHistory], index: VectorIndex, products: str, users: str,
                         params: Personalization) -> set[str]:
    """Recompute vectors from whole histories (users whose products arrived late; a new model version).

    Returns the ids of users that still have interactions whose product is not in the catalog."""
    vectors = product_vectors(index, products, [pid for h in histories.values() for pid in h.product_ids()])
    return _write(index, users, {user_id: (user_vector(history, vectors, params), history)
                                 for user_id, history in histories.items()})
