"""Popular products, the answer for a shopper with no history (cold start, issue #15): purchases and carts
counted with exponential decay in event time, overall and per category.

A product's popularity at time t is  P(t) = Σ_e w(type_e) · 2^(−(t − t_e) / H)  over its purchase and cart
events e (w as for user vectors, cartwise.settings.Personalization; H = ``popularity_half_life_s``). Stored
as  L = log2 Σ_e w(type_e) · 2^(t_e / H),  so P(t) = 2^(L − t/H): every product decays at the same rate, the
order by L is the order by P at any common time, and an event updates L without reading the clock
(L ← log2(2^L + w · 2^(t_e/H))). Scores shown are P relative to the most popular product shown (2^(L − L_max)).

Points live in one version-independent collection, :data:`COLLECTION`: a count is no model's output, and a
swap never rebuilds it. Each stream worker writes the counts of the user partitions it owns (behavior topics
are keyed by user), one point per (product, partition), so no two workers ever write one point; a reader
combines the partial counts of a product (log-sum-exp) from the points ordered by L, like a terms
aggregation over shards: exact with one partition, and with several a product is found when one of its
partial counts is among the top ``limit · FANOUT``."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from cartwise.catalog import point_id
from cartwise.index import CollectionSchema, IndexHit, IndexPoint

COLLECTION = "popularity"
SCHEMA = CollectionSchema(keyword=("category_prefixes",), float=("popularity",))
SCORE_FIELD = "popularity"  # L, log2 units
FANOUT = 4  # partial counts read per product shown
_NO_VECTOR = np.ones(1, dtype=np.float32)  # the collection's 1-d dense vector: points are found by payload only


def event_term(weight: float, event_time_s: float, half_life_s: float) -> float:
    """log2(w · 2^(t_e / H)): one event's contribution to L. Raises ValueError for a weight <= 0."""
    if weight <= 0:
        raise ValueError(f"an event weight must be > 0, got {weight}")
    return math.log2(weight) + event_time_s / half_life_s


def combine(a: float | None, b: float) -> float:
    """log2(2^a + 2^b); ``a`` None is an empty count."""
    return b if a is None else float(np.logaddexp2(a, b))


def partial_id(product_id: str, partition: int) -> str:
    """Point id of a product's count over the user partition ``partition``."""
    return point_id(f"popularity:{product_id}@{partition}")


def partial_point(product_id: str, partition: int, score: float, category_prefixes: list[str]) -> IndexPoint:
    """The point of a partial count L of ``product_id``."""
    return IndexPoint(partial_id(product_id, partition), _NO_VECTOR,
                      {"product_id": product_id, "partition": partition, SCORE_FIELD: score,
                       "category_prefixes": category_prefixes})


def ranked(partials: Iterable[IndexHit]) -> list[tuple[str, float]]:
    """(product_id, L) of the products of ``partials`` (points of :func:`partial_point`), their partial
    counts combined, most popular first."""
    totals: dict[str, float] = {}
    for hit in partials:
        product = hit.payload["product_id"]
        totals[product] = combine(totals.get(product), float(hit.payload[SCORE_FIELD]))
    return sorted(totals.items(), key=lambda item: -item[1])


def relative(score: float, best: float) -> float:
    """P relative to the most popular product's: 2^(L − L_best), in (0, 1]."""
    return float(2.0 ** (score - best))
