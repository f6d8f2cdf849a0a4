"""Turning behavior into user vectors in the users collection (incrementally, or rebuilt from history).

Crash safety: the history Table (changelog in Kafka) is written before the users collection, and every
user point carries the digest of the history it was computed from. A batch redelivered after a crash
between the two writes finds its events already in the history (duplicates by event_id), but the point's
digest says the vector lags the history, so the vector is rebuilt from it: each event counts exactly once
whichever write the crash fell between, and the stored vector always equals a rebuild from the history."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from cartwise.catalog import point_id
from cartwise.index import VectorIndex
from cartwise.personalization import Interaction, UserHistory, UserPoint, UserVector, accumulate, user_vector
from cartwise.settings import Personalization
from streams.user_points import UserPoints


@dataclass(slots=True)
class UserUpdate:
    """One user's share of a batch: the digest of the history before it and its kept interactions
    (``prior``), and the history after it (the batch's events are applied to ``history`` in place)."""

    before: str
    history: UserHistory
    prior: tuple[Interaction, ...] = ()

    @classmethod
    def of(cls, history: UserHistory) -> "UserUpdate":
        """An update starting from ``history`` (which the batch's events are then applied to)."""
        return cls(history.digest(), history, tuple(history.interactions))

    def added(self) -> list[Interaction]:
        """Interactions the batch added that the history still keeps (duplicates, events too old for a full
        history and those a later event of the batch pushed out are not)."""
        prior = set(self.prior)
        return [i for i in self.history.interactions if i not in prior]

    def removed(self) -> list[Interaction]:
        """Interactions kept before the batch that a full history pushed out."""
        kept = set(self.history.interactions)
        return [i for i in self.prior if i not in kept]


class DecodedHistories:
    """The behavior agent's decoded histories, user_id -> :class:`UserHistory`, at most ``capacity`` (least
    recently used out; 0 keeps none). An entry is used only while the history Table still holds the very
    value (the dict object) it was encoded to, so a Table recovered, changed elsewhere or erased is decoded
    afresh; :meth:`take` removes the entry, so a batch that fails leaves none the Table does not hold.
    Decoding and encoding a full history (50 interactions) for every user of every batch took a quarter of
    the worker's event loop in issue #28's soak."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[dict, UserHistory]] = OrderedDict()

    def take(self, user_id: str, stored: dict | None) -> UserHistory:
        """``user_id``'s history for a batch: the cached one if the Table's value ``stored`` is the one it was
        put with, else decoded from ``stored`` (None: empty)."""
        entry = self._entries.pop(user_id, None)
        if entry is not None and entry[0] is stored:
            return entry[1]
        return UserHistory.from_json(stored)

    def put(self, user_id: str, value: dict, history: UserHistory) -> None:
        """``history`` was written to the Table as ``value`` (its :meth:`UserHistory.to_json`)."""
        if self.capacity:
            self._entries[user_id] = (value, history)
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def discard(self, user_ids) -> None:
        """Drop the entries of erased or expired users."""
        for user_id in user_ids:
            self._entries.pop(user_id, None)


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


def _folds(stored: UserPoint | None, update: UserUpdate) -> bool:
    """Whether the batch can be folded into ``stored`` (added terms in, pushed-out terms out) and equal a
    rebuild: the point is the pre-batch history's, with every interaction's term in its sum (none pending)."""
    if stored is None:
        return update.before == EMPTY_HISTORY
    return stored.history == update.before and stored.state.pending == 0


def update_user_vectors(updates: dict[str, UserUpdate], index: VectorIndex, points: UserPoints, products: str,
                        users: str, params: Personalization) -> set[str]:
    """Bring each touched user's point up to date with their history: nothing when the point already
    carries the history's digest; when it carries the pre-batch digest, the new interactions folded in and
    those a full history pushed out taken out (O(D) each; a returning shopper's history is full, so this is
    the common case); a rebuild from the whole history otherwise (or when a pushed-out product has no vector
    any more). One read of the points not cached in ``points``, one of product vectors (from ``index``; a
    second only for such rebuilds), one upsert per call.

    Returns the ids of users with interactions whose product is not in the catalog yet (to rebuild later)."""
    stored = points.get(users, updates)
    current = {u for u, update in updates.items() if u in stored and stored[u].history == update.history.digest()}
    folds = {u: (updates[u].added(), updates[u].removed()) for u, update in updates.items()
             if u not in current and _folds(stored.get(u), update)}
    rebuilds = {u: updates[u].history for u in updates if u not in current and u not in folds}
    wanted = [i.product_id for added, removed in folds.values() for i in added + removed]
    vectors = product_vectors(index, products, wanted + [pid for h in rebuilds.values() for pid in h.product_ids()])
    late = {u: updates[u].history for u, (_, removed) in folds.items()
            if any(i.product_id not in vectors for i in removed)}
    if late:
        vectors |= product_vectors(index, products, [pid for h in late.values() for pid in h.product_ids()])
    computed = {u: (user_vector(history, vectors, params), history) for u, history in (rebuilds | late).items()}
    for u, (added, removed) in folds.items():
        if u not in late:
            known = [(i, vectors[i.product_id]) for i in added if i.product_id in vectors]
            previous = stored[u].state if u in stored else None
            state = accumulate(previous, known, len(added) - len(known), params,
                               [(i, vectors[i.product_id]) for i in removed])
            computed[u] = (state, updates[u].history)
    return _write(points, users, computed) | {u for u in current if stored[u].state.pending}


def rebuild_user_vectors(histories: dict[str, UserHistory], index: VectorIndex, points: UserPoints, products: str,
                         users: str, params: Personalization) -> set[str]:
    """Recompute vectors from whole histories (users whose products arrived late; a new model version).

    Returns the ids of users that still have interactions whose product is not in the catalog."""
    vectors = product_vectors(index, products, [pid for h in histories.values() for pid in h.product_ids()])
    return _write(points, users, {user_id: (user_vector(history, vectors, params), history)
                                 for user_id, history in histories.items()})
