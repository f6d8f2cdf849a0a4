"""Merchandising a page (issue #15): offset paging, price sorts, an in-stock boost and facet counts.

Every page is a slice ``[offset, offset + limit)`` of one ranking whose length does not depend on the
offset, so page 2 continues page 1 (collapsing included: cartwise/diversity.py keeps the first product of
each text in rank order, so a longer ranking starts with the shorter one).

A plain relevance page needs the first ``offset + limit`` hits of the ranking. A price sort, an in-stock
boost or facet counts work on the *candidate set* instead: the engine's ``candidate_set`` best-ranked
products of the request by relevance, under its filter, then collapsed like the page (so at most that many;
fewer where identical-text copies were among them). Why that set and not every product the
filter matches: a semantic query has no cut-off (every product has an inner product with q̂), so a product
"matches" a query by ranking high enough; sorting every filter match by price would open a "sofa" search on
the cheapest product of the catalog. (The engine's ``order_by`` on scroll orders filter matches without a
query, so it cannot order a query's candidates.) The size is the ranking profile's
(cartwise.ranking.FetchDepths.candidate_set, 200). Why a fixed size: each page of a sorted or boosted request
then slices the same reordered set. Why 200, and collapsed once rather than fetched until 200 distinct
texts fill it: the cost is reading the hits with their vectors (for the score parts); measured on 10k ×
384-d Edge points, 200 hits with vectors took 8-14 ms, 1000 took 40-53 ms, and on REES46 (where a query's
top 600 may hold fewer than 200 texts) growing the fetch to fill the set cost 91 ms of CPU per Search
against 20 ms for a plain one; one read of 200 costs 21 ms (docs/architecture.md, "Merchandising and
paging"). Pages past the candidate set are empty.

The boost is applied here, over the candidates, not as an engine score formula, so that one code path
serves every backend and retrieval and the set it reorders is the one that is sorted and counted.
Categories and brands are counted by the engine (:meth:`cartwise.index.VectorIndex.facet` over the
candidates' ids); price bands in Python from the candidates' payloads, since the engine's facets count
keyword values and a price is a float.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Sequence

from cartwise.index import AsyncVectorIndex, SearchFilter
from cartwise.index.base import CATEGORY_SEPARATOR
from cartwise.retrieval import RankedHit

Sort = Literal["relevance", "price_asc", "price_desc"]
SORTS: tuple[Sort, ...] = ("relevance", "price_asc", "price_desc")
MAX_BOOST = 10.0
PRICE_EDGES = (0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)  # band k is [edge k, edge k+1)
FACET_VALUES = 20  # values per facet returned, most frequent first
_CATEGORY_SCAN = 1000  # category prefixes read from the engine, to find those one level down


@dataclass(frozen=True, slots=True)
class Merchandising:
    """A request's page options: ``offset`` hits to skip, the ``sort``, ``in_stock_boost`` added to the
    score of in-stock products (in the fused score's units), and whether to count ``facets``."""

    offset: int = 0
    sort: Sort = "relevance"
    in_stock_boost: float = 0.0
    facets: bool = False

    def over_candidates(self) -> bool:
        """Whether the page is cut from the reordered candidate set rather than the ranking itself."""
        return self.sort != "relevance" or self.in_stock_boost > 0.0 or self.facets

    def depth(self, limit: int, candidate_set: int) -> int:
        """How many ranked hits (collapsed) a page of ``limit`` needs: the ``candidate_set`` (its size,
        cartwise.ranking.FetchDepths), or offset + limit."""
        return candidate_set if self.over_candidates() else self.offset + limit


@dataclass(frozen=True, slots=True)
class PriceBand:
    """Products priced in [``low``, ``high``) (``high`` None: no upper edge)."""

    low: float
    high: float | None
    count: int


@dataclass(frozen=True, slots=True)
class FacetCounts:
    """Counts over a candidate set of ``candidates`` products: (value, count) pairs most frequent first, ties
    by value; categories one level below the filter's category prefix, brands lower-cased."""

    categories: list[tuple[str, int]]
    brands: list[tuple[str, int]]
    price_bands: list[PriceBand]
    candidates: int


def arrange(ranked: Sequence[RankedHit], options: Merchandising, limit: int) -> list[RankedHit]:
    """The page of ``options`` from ``ranked`` (best first, :meth:`Merchandising.depth` long): boosted, then
    sorted by price (products without a price last; ties keep their relevance order), then sliced."""
    hits = list(ranked)
    if options.in_stock_boost > 0.0:
        hits = boosted(hits, options.in_stock_boost)
    if options.sort != "relevance":
        hits = by_price(hits, descending=options.sort == "price_desc")
    return hits[options.offset:options.offset + limit]


def boosted(hits: Sequence[RankedHit], boost: float) -> list[RankedHit]:
    """``hits`` with ``boost`` added to the score of each in-stock product (payload ``in_stock``), re-ranked
    by that score (stable: equal scores keep their order)."""
    raised = [_with_score(h, h.hit.score + boost) if h.hit.payload.get("in_stock", True) else h for h in hits]
    return sorted(raised, key=lambda h: -h.hit.score)


def by_price(hits: Sequence[RankedHit], descending: bool) -> list[RankedHit]:
    """``hits`` ordered by payload ``price``, products without one last; stable, so ties keep their order."""
    sign = -1.0 if descending else 1.0
    return sorted(hits, key=lambda h: (_price(h) is None, sign * (_price(h) or 0.0)))


async def count_facets(index: AsyncVectorIndex, collection: str, candidates: Sequence[RankedHit],
                       category_prefix: Sequence[str]) -> FacetCounts:
    """Facet counts over ``candidates`` (module docstring): categories and brands by the engine's facets over
    their ids, price bands over :data:`PRICE_EDGES` from their payloads. Raises KeyError for a missing
    collection."""
    if not candidates:
        return FacetCounts([], [], [], 0)
    ids = SearchFilter(ids=frozenset(h.hit.id for h in candidates))
    # not exact: over a set of ids the engine counts those points (see VectorIndex.facet), 15x+ faster
    prefixes = await index.facet(collection, "category_prefixes", _CATEGORY_SCAN, ids, exact=False)
    brands = await index.facet(collection, "brand", FACET_VALUES, ids, exact=False)
    return FacetCounts(next_level(prefixes, category_prefix)[:FACET_VALUES], brands,
                       price_bands([_price(h) for h in candidates]), len(candidates))


def next_level(prefixes: Sequence[tuple[str, int]], category_prefix: Sequence[str]) -> list[tuple[str, int]]:
    """The categories one level below ``category_prefix`` among joined-prefix counts (the indexed
    ``category_prefixes`` values), as (last level's name, count), in the given order."""
    depth, head = len(category_prefix), list(category_prefix)
    levels = [(value.split(CATEGORY_SEPARATOR), count) for value, count in prefixes]
    return [(path[-1], count) for path, count in levels if len(path) == depth + 1 and path[:depth] == head]


def price_bands(prices: Sequence[float | None]) -> list[PriceBand]:
    """How many of ``prices`` (None: no price, not counted) fall in each band of :data:`PRICE_EDGES` (the
    last one open above), bands with none left out, cheapest first."""
    bands = []
    for low, high in zip(PRICE_EDGES, (*PRICE_EDGES[1:], None)):
        count = sum(1 for p in prices if p is not None and low <= p and (high is None or p < high))
        if count:
            bands.append(PriceBand(low, high, count))
    return bands


def _price(hit: RankedHit) -> float | None:
    price = hit.hit.payload.get("price")
    return None if price is None else float(price)


def _with_score(ranked: RankedHit, score: float) -> RankedHit:
    return dataclasses.replace(ranked, hit=dataclasses.replace(ranked.hit, score=score))
