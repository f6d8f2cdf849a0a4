"""The stream worker's user points, read and written through a bounded LRU cache in front of the index.

Every behavior batch reads the points of the users it touches (their vector state and history digest)
and writes them back. Reading a point with its vector back through the Qdrant Edge binding costs about
32 us (measured in issue #13), more than the rest of folding an event in. Only the worker that owns a
user's partition writes that user's points (users are partitioned like the behavior topics), so the point
it last wrote is the point stored: a write-through cache is exact, as long as it is cleared when the
worker's partitions are reassigned (``clear``) and every write of a user point goes through it."""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from cartwise.catalog import point_id
from cartwise.index import IndexPoint, VectorIndex
from cartwise.personalization import UserPoint


class UserPoints:
    """User points of the collections the worker writes (``users_vN``), cached per (collection, user_id);
    at most ``capacity`` users (about 2 KB each at D = 384) are kept, least recently used out first."""

    def __init__(self, index: VectorIndex, capacity: int) -> None:
        self.index, self.capacity = index, capacity
        self._cache: OrderedDict[tuple[str, str], UserPoint] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, users: str, user_ids: Iterable[str]) -> dict[str, UserPoint]:
        """The stored points of ``user_ids`` in ``users`` (absent users are left out); one index read for
        those not cached."""
        found, missing = {}, []
        for user_id in user_ids:
            point = self._cache.get((users, user_id))
            if point is None:
                missing.append(user_id)
            else:
                self._cache.move_to_end((users, user_id))
                found[user_id] = point
        self.hits, self.misses = self.hits + len(found), self.misses + len(missing)
        if missing:
            hits = self.index.retrieve(users, [point_id(u) for u in missing], with_vectors=True)
            for point in (UserPoint.from_payload(h.payload, h.vector) for h in hits):
                found[point.user_id] = point
                self._remember(users, point)
        return found

    def put(self, users: str, points: list[UserPoint]) -> None:
        """Upsert ``points`` into ``users`` (one index write) and cache them."""
        self.index.upsert(users, [IndexPoint(point_id(p.user_id), p.state.vector, p.to_payload()) for p in points])
        for point in points:
            self._remember(users, point)

    def delete(self, users: str, user_ids: list[str]) -> None:
        """Delete the users' points from ``users`` and from the cache."""
        self.index.delete(users, [point_id(u) for u in user_ids])
        for user_id in user_ids:
            self._cache.pop((users, user_id), None)

    def clear(self) -> None:
        """Forget every cached point (the worker's partitions were reassigned)."""
        self._cache.clear()

    def _remember(self, users: str, point: UserPoint) -> None:
        self._cache[(users, point.user_id)] = point
        self._cache.move_to_end((users, point.user_id))
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
