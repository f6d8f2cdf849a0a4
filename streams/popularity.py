"""The stream worker's popularity counts (cartwise/popularity.py): each applied purchase or cart of a
shopper adds its decayed weight to the count of its product over the event's user partition.

Only the owner of a user partition writes that partition's counts, so the counts it last wrote are the
stored ones and a bounded write-through cache of them is exact until the partitions are reassigned
(``clear``), as for user points (streams/user_points.py). Counts are written after the history Table: a
crash in between leaves the batch uncounted (the redelivered events are stale by their event ids and
count no more), never counted twice. Events from the playground (``origin``) and views are not counted,
and an erased user's past events stay in the counts, which hold no user id."""

from __future__ import annotations

from cachetools import LRUCache

from cartwise.catalog import point_id
from cartwise.events import BehaviorEvent
from cartwise.index import VectorIndex
from cartwise.popularity import COLLECTION, SCHEMA, SCORE_FIELD, combine, event_term, partial_id, partial_point
from cartwise.settings import Personalization

COUNTED = ("purchase", "cart")


class PopularityCounts:
    """Partial counts L per (product_id, partition), batched: :meth:`add` events, then :meth:`write` once
    per batch (two index reads for what is not cached, one upsert). ``half_life_s`` is H, seconds; the
    weights are the user vectors' w(type) of ``params``; at most ``capacity`` counts are cached."""

    def __init__(self, index: VectorIndex, params: Personalization, half_life_s: float,
                 capacity: int = 100_000) -> None:
        self.index, self.params, self.half_life_s = index, params, half_life_s
        self._cache: LRUCache = LRUCache(capacity)
        self._batch: dict[tuple[str, int], float] = {}
        self._uncategorized: set[tuple[str, int]] = set()  # counted before their product arrived

    def ensure_collection(self) -> None:
        """Create the popularity collection if missing."""
        self.index.create_collection(COLLECTION, 1, SCHEMA)

    def add(self, event: BehaviorEvent, partition: int) -> None:
        """Count ``event`` (an applied event of user partition ``partition``) in this batch, if it counts."""
        if event.event_type not in COUNTED or event.origin is not None:
            return
        key = (event.product_id, partition)
        term = event_term(self.params.weight(event.event_type), event.event_time.timestamp(), self.half_life_s)
        self._batch[key] = combine(self._batch.get(key), term)

    def write(self, products: str) -> int:
        """Fold the batch into the stored counts, with each product's category prefixes as ``products`` (a
        products collection) holds them now; returns how many counts were written."""
        batch, self._batch = self._batch, {}
        if not batch:
            return 0
        stored = self._stored(list(batch))
        categories = self._categories(products, {product for product, _ in batch})
        points = []
        for key, term in batch.items():
            score = self._cache[key] = combine(stored.get(key), term)
            points.append(partial_point(*key, score, categories.get(key[0], [])))
            if key[0] in categories:
                self._uncategorized.discard(key)
            else:
                self._uncategorized.add(key)
        self.index.upsert(COLLECTION, points)
        return len(points)

    def categorize(self, products: str) -> int:
        """Give the counts of products that had not arrived when counted the category ``products`` holds for
        them now (the worker's timer calls it); returns how many counts were rewritten."""
        if not self._uncategorized:
            return 0
        categories = self._categories(products, {product for product, _ in self._uncategorized})
        ready = [key for key in self._uncategorized if key[0] in categories]
        stored = self._stored(ready)
        self.index.upsert(COLLECTION, [partial_point(*key, stored[key], categories[key[0]])
                                       for key in ready if key in stored])
        self._uncategorized.difference_update(ready)
        return len(ready)

    def clear(self) -> None:
        """Forget every cached count (the worker's partitions were reassigned)."""
        self._cache.clear()
        self._uncategorized.clear()

    def _stored(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
        found = {key: self._cache[key] for key in keys if key in self._cache}
        missing = {partial_id(*key): key for key in keys if key not in found}
        if missing:
            for hit in self.index.retrieve(COLLECTION, list(missing), with_vectors=False):
                found[missing[hit.id]] = float(hit.payload[SCORE_FIELD])
        return found

    def _categories(self, products: str, product_ids: set[str]) -> dict[str, list[str]]:
        """product_id -> category prefixes of the products ``products`` holds (a product not arrived yet
        is counted without a category until its next counted event)."""
        try:
            hits = self.index.retrieve(products, [point_id(p) for p in product_ids], with_vectors=False)
        except KeyError:  # the collection was dropped under us (a swap's clean-up)
            return {}
        return {hit.payload["product_id"]: hit.payload.get("category_prefixes", []) for hit in hits}
