"""Turning behavior into user vectors in the users collection (incrementally, or rebuilt from history).

Crash safety: the history Table (changelog in Kafka) is written before the users collection, and every
user point carries the digest of the history it was computed from. A batch redelivered after a crash
between the two writes finds its events already in the history (duplicates by event_id), but the point's
digest says the vector lags the history, so the vector is rebuilt from it: each event counts exactly once
whichever write the crash fell between, and the stored vector always equals a rebuild from the history."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cartwise.catalog import point_id
from cartwise.index import VectorIndex
from cartwise.personalization import Interaction, UserHistory, UserPoint, UserVector, accumulate, user_vector
from cartwise.settings import Personalization
from streams.user_points import UserPoints


@dataclass(slots=True)
class UserUpdate:
    """One user's share of a batch: the digest of the history before it, the history after it, and the
    interactions it added (duplicates and events too old for a full history add none)."""

    before: str
    history: UserHistory
    added: list[Interaction] = field(default_factory=list)

    @classmethod
    def of(cls, history: UserHistory) -> "UserUpdate":
        """An update starting from ``history`` (which the batch's events are then applied to)."""
        return cls(history.digest(), history)


def product_vectors(index: VectorIndex, collection: str, product_ids: list[str]) -> dict[str, np.ndarray]:
    """product_id -> (D,) vector for those of ``product_ids`` present in ``collection``."""
    ids = {point_id(pid): pid for pid in product_ids}
    hits = index.retrieve(collection, list(ids), with_vectors=True, with_payload=False)
    return {ids[hit.id]: hit.vector for hit in hits}


def _write(points: UserPoints, users: str, computed: dict[str, tuple[UserVector | None, UserHistory]]) -> set[str]:
    """Upsert the computed vectors; returns the users still waiting on a product (or with no vector yet)."""
    points.put(users, [UserPoint(user_id, uv, tuple(history.purchased), history.digest())
                       for user_id, (uv, history) in computed.items() if uv is not None])
    return {user_id for user_id, (uv, _) in computed.items() if uv is None or uv.pending}


EMPTY_HISTORY = UserHistory().digest()


def _folds(stored: UserPoint | None, update: UserUpdate, params: Personalization) -> bool:
    """Whether folding ``update.added`` into ``stored`` equals a rebuild: the point is the pre-batch history's
    and the history is below its cap (at the cap, a new interaction may push out one the sum still holds)."""
    matches = stored.history == update.before if stored is not None else update.before == EMPTY_HISTORY
    return matches and len(update.history.interactions) < params.max_history


def update_user_vectors(updates: dict[str, UserUpdate], index: VectorIndex, points: UserPoints, products: str,
                        users: str, params: Personalization) -> set[str]:
    """Bring each touched user's point up to date with their history: nothing when the point already
    carries the history's digest, the new interactions folded in (O(D) each) when it carries the pre-batch
    digest, a rebuild from the whole history otherwise. One read of the points not cached in ``points``, one
    of product vectors (from ``index``), one upsert per call.

    Returns the ids of users with interactions whose product is not in the catalog yet (to rebuild later)."""
    stored = points.get(users, updates)
    current = {u for u, update in updates.items() if u in stored and stored[u].history == update.history.digest()}
    folds = {u for u, update in updates.items() if u not in current and _folds(stored.get(u), update, params)}
    rebuilds = {u: updates[u].history for u in updates if u not in current and u not in folds}
    wanted = [i.product_id for u in folds for i in updates[u].added]
    wanted += [pid for history in rebuilds.values() for pid in history.product_ids()]
    vectors = product_vectors(index, products, wanted)
    computed = {u: (user_vector(history, vectors, params), history) for u, history in rebuilds.items()}
    for u in folds:
        added = updates[u].added
        known = [(i, vectors[i.product_id]) for i in added if i.product_id in vectors]
        previous = stored[u].state if u in stored else None
        computed[u] = (accumulate(previous, known, len(added) - len(known), params), updates[u].history)
    return _write(points, users, computed) | {u for u in current if stored[u].state.pending}


def rebuild_user_vectors(histories: dict[str, UserHistory], index: VectorIndex, points: UserPoints, products: str,
                         users: str, params: Personalization) -> set[str]:
    """Recompute vectors from whole histories (users whose products arrived late; a new model version).

    Returns the ids of users that still have interactions whose product is not in the catalog."""
    vectors = product_vectors(index, products, [pid for h in histories.values() for pid in h.product_ids()])
    return _write(points, users, {user_id: (user_vector(history, vectors, params), history)
                                 for user_id, history in histories.items()})
