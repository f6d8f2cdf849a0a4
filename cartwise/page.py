"""The page pipeline: what one answer of the API shows, assembled in one place.

A page is ranking (cartwise/retrieval.py, as the :class:`cartwise.ranking.RankingProfile` says) of the text
groups (cartwise/groups.py: one product per identical text, in one engine read), merchandising (offset, sort, in-stock boost: cartwise/merchandising.py)
and, when asked, facet counts over the candidate set. The servicer calls :meth:`Pages.ranked` (Search,
Recommend, SimilarProducts) or :meth:`Pages.popular` (the cold start) once per request; every engine read of a
page is made here (docs/architecture.md, "Merchandising and paging" counts them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from cartwise import popularity
from cartwise.catalog import point_id
from cartwise.index import AsyncVectorIndex, SearchFilter
from cartwise.merchandising import FacetCounts, Merchandising, arrange, count_facets
from cartwise.ranking import RankingProfile
from cartwise.lifecycle import VersionCollections
from cartwise.retrieval import RankedHit, RankRequest, page, rank_async

POPULAR = RankRequest(None, None, None, 0.0, "dense")  # the cold start's request: no query, no user, no score parts


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a page shows: ``limit`` hits of the products matching ``flt``, after the ``merchandising`` options
    (offset, sort, boost, facets); with ``collapse`` one product per identical text."""

    limit: int
    flt: SearchFilter
    merchandising: Merchandising = Merchandising()
    collapse: bool = True


@dataclass(frozen=True, slots=True)
class Page:
    """The ``hits`` shown, best first, and the ``facets`` over the candidate set (None when not asked)."""

    hits: list[RankedHit]
    facets: FacetCounts | None = None


class Pages:
    """Pages of one products collection at a time, read from ``index`` (the serving path's reads) as
    ``profile`` ranks; ``hnsw_ef`` is the least HNSW candidate list of a dense read (a deeper page asks for
    its depth). Methods raise KeyError for a missing products collection and
    :class:`cartwise.index.IndexUnavailable` for an index server that does not answer."""

    def __init__(self, index: AsyncVectorIndex, profile: RankingProfile, hnsw_ef: int) -> None:
        self.index, self.profile, self.hnsw_ef = index, profile, hnsw_ef

    async def ranked(self, collections: VersionCollections, request: RankRequest, spec: PageRequest) -> Page:
        """The page of ``request`` over a version's ``collections``: the first offset + limit products of the
        ranking, one per text unless ``spec.collapse`` is off; or, for a sort, boost or facets, the candidate
        set: the ``profile.fetch.candidate_set`` best (cartwise/merchandising.py). Reads: one ranking read of
        the text groups (cartwise/groups.py), and two facet reads of the products when facets are asked.
        Raises ValueError when ``request`` has neither a query nor a user vector."""
        depth = spec.merchandising.depth(spec.limit, self.profile.fetch.candidate_set)
        ranked = await rank_async(self.index, collections.groups, request, self.profile, depth, spec.flt,
                                  self._hnsw_ef(depth), spec.collapse)
        return await self._arranged(ranked, collections.products, spec)

    async def popular(self, collections: VersionCollections, spec: PageRequest) -> Page:
        """The most popular products (cartwise/popularity.py) within ``spec.flt``'s category, then its other
        filters, over the version's products; each hit's score is its popularity relative to the first's, its
        score parts 0. Reads: the popularity counts, the products they name, and two facet reads
        when facets are asked; nothing is popular while no worker has created the counts' collection."""
        depth = spec.merchandising.depth(spec.limit, self.profile.fetch.candidate_set)
        try:
            partials = await self.index.scroll(popularity.COLLECTION, depth * popularity.FANOUT,
                                               SearchFilter(category_prefix=spec.flt.category_prefix),
                                               order_by=popularity.SCORE_FIELD)
        except KeyError:
            partials = []
        scores = dict(popularity.ranked(partials))
        if not scores:
            return Page([], FacetCounts([], [], [], 0) if spec.merchandising.facets else None)
        flt = dataclasses.replace(spec.flt, ids=frozenset(point_id(p) for p in scores))
        found = await self.index.scroll(collections.products, len(scores), flt)
        best = max(scores[h.payload["product_id"]] for h in found) if found else 0.0
        found = [dataclasses.replace(h, score=popularity.relative(scores[h.payload["product_id"]], best))
                 for h in found]  # page() orders them
        return await self._arranged(page(found, POPULAR, depth, spec.collapse), collections.products, spec)

    async def _arranged(self, ranked: Sequence[RankedHit], collection: str, spec: PageRequest) -> Page:
        """The page of ``spec`` cut from ``ranked`` (:meth:`Merchandising.depth` hits, best first), and the facet
        counts over ``ranked`` when asked for."""
        facets = None
        if spec.merchandising.facets:
            facets = await count_facets(self.index, collection, ranked, spec.flt.category_prefix)
        return Page(arrange(ranked, spec.merchandising, spec.limit), facets)

    def _hnsw_ef(self, limit: int) -> int:
        return max(self.hnsw_ef, limit)

