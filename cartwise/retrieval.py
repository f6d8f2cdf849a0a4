"""Ranking one request against a version's products: hybrid (default), dense or lexical, personalized on
the dense side, scored as a :class:`cartwise.ranking.RankingProfile` says, in one engine read of the text
groups (cartwise/groups.py). The gRPC API's page pipeline (cartwise/page.py, through :func:`rank_async`,
over an :class:`AsyncVectorIndex`) and the offline evaluation (:func:`rank`, over a :class:`VectorIndex`)
make the same engine calls and score parts, so the evaluation measures what is served (docs/architecture.md,
"Hybrid retrieval")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cartwise.catalog import TEXT_DIGEST
from cartwise.diversity import collapse_identical
from cartwise.groups import products_of
from cartwise.index import AsyncVectorIndex, HybridQuery, IndexHit, SearchFilter, SparseVector, VectorIndex
from cartwise.personalization import fused_query
from cartwise.ranking import RankingProfile

Retrieval = Literal["hybrid", "dense", "lexical"]
RETRIEVALS: tuple[Retrieval, ...] = ("hybrid", "dense", "lexical")


@dataclass(frozen=True, slots=True)
class RankRequest:
    """What to rank by: ``query`` (D,) float32 q̂ and its ``lexical`` vector (None without query text),
    ``user`` (D,) float32 û (None for a cold or absent user) with weight ``alpha``, the ``retrieval`` and
    the lexical weight w (None: the service's default)."""

    query: np.ndarray | None
    lexical: SparseVector | None
    user: np.ndarray | None
    alpha: float
    retrieval: Retrieval = "hybrid"
    lexical_weight: float | None = None


@dataclass(frozen=True, slots=True)
class RankedHit:
    """A hit with its score parts: ``lexical`` BM25, ``semantic`` ⟨q̂, p̂⟩, ``personal`` ⟨û, p̂⟩; the
    hit's ``score`` is the fused score it is ranked by."""

    hit: IndexHit
    lexical: float
    semantic: float
    personal: float


def served_retrieval(request: RankRequest) -> Retrieval:
    """The retrieval that actually runs: an empty query (user only) is dense whatever was asked."""
    return request.retrieval if request.query is not None else "dense"


def applied_lexical_weight(request: RankRequest, profile: RankingProfile) -> float:
    """w of the fusion that runs: the request's, else the profile's; 0 when the retrieval is not hybrid."""
    if served_retrieval(request) != "hybrid":
        return 0.0
    return profile.lexical_weight if request.lexical_weight is None else request.lexical_weight


def rank(index: VectorIndex, groups: str, request: RankRequest, profile: RankingProfile, limit: int,
         flt: SearchFilter | None = None, hnsw_ef: int | None = None, collapse: bool = True) -> list[RankedHit]:
    """The top ``limit`` products matching ``flt`` for ``request``, best first, from one engine read of the
    text-groups collection ``groups`` (cartwise/groups.py): ``limit`` groups, each showing its first matching
    product, or with ``collapse`` off all of them (cut to ``limit``). The read fetches vectors only when the
    score parts need them (:func:`needs_vectors`). Raises ValueError when neither a query nor a user vector is
    given, KeyError for a missing collection."""
    flt = (flt or SearchFilter()).of_groups()
    hits = _engine_call(index, groups, request, profile, limit, flt, hnsw_ef)
    return ranked_products(hits, request, flt, limit, collapse)


async def rank_async(index: AsyncVectorIndex, groups: str, request: RankRequest, profile: RankingProfile,
                     limit: int, flt: SearchFilter | None = None, hnsw_ef: int | None = None,
                     collapse: bool = True) -> list[RankedHit]:
    """:func:`rank` over an :class:`AsyncVectorIndex` (the serving path); the same errors."""
    flt = (flt or SearchFilter()).of_groups()
    hits = await _engine_call(index, groups, request, profile, limit, flt, hnsw_ef)
    return ranked_products(hits, request, flt, limit, collapse)


def ranked_products(groups: list[IndexHit], request: RankRequest, flt: SearchFilter, limit: int,
                    collapse: bool) -> list[RankedHit]:
    """The first ``limit`` products of group hits ``groups`` (by score, equal scores in id order), one per
    group with ``collapse``, else every product matching ``flt``, with their score parts."""
    shown: list[IndexHit] = []
    for group in sorted(groups, key=lambda hit: (-hit.score, hit.id)):
        shown += products_of(group, flt, every=not collapse)
        if len(shown) >= limit:
            break
    return ranked_hits(shown[:limit], request)


def needs_vectors(request: RankRequest) -> bool:
    """Whether a hit's score parts need its vector: not when the ranking's score is the one part there is
    (dense retrieval by the query alone, ⟨q̂, p̂⟩, or by the user alone, ⟨û, p̂⟩)."""
    return not (served_retrieval(request) == "dense" and (request.user is None or request.query is None))


def choose(hits: list[IndexHit], limit: int, collapse: bool) -> list[IndexHit]:
    """The first ``limit`` of ``hits`` (product hits) by score, equal scores in id order; with ``collapse``
    one per identical text (payload ``text_digest``)."""
    # identical texts tie exactly, and the engine orders ties differently for different limits: without a
    # fixed tie order a deeper ranking (the next page) would start with another copy than page 1 shows
    hits = sorted(hits, key=lambda hit: (-hit.score, hit.id))
    if collapse:
        hits = collapse_identical(hits, [hit.payload.get(TEXT_DIGEST) for hit in hits], limit)
    return hits[:limit]


def page(hits: list[IndexHit], request: RankRequest, limit: int, collapse: bool) -> list[RankedHit]:
    """:func:`choose` over product ``hits``, as :class:`RankedHit`."""
    return ranked_hits(choose(hits, limit, collapse), request)


def _engine_call(index: VectorIndex | AsyncVectorIndex, collection: str, request: RankRequest, profile: RankingProfile,
                 limit: int, flt: SearchFilter | None, hnsw_ef: int | None) -> Any:
    """Call the index method of the retrieval that runs, with vectors when :func:`needs_vectors`: its hits
    from a :class:`VectorIndex`, an awaitable of them from an :class:`AsyncVectorIndex`."""
    retrieval, vectors = served_retrieval(request), needs_vectors(request)
    if retrieval == "lexical":
        return index.lexical_search(collection, request.lexical, limit, flt, with_vectors=vectors)
    if retrieval == "hybrid":
        return index.hybrid_search(collection, _hybrid_query(request, profile), limit, flt, hnsw_ef,
                                   with_vectors=vectors)
    return index.search(collection, fused_query(request.query, request.user, request.alpha), limit, flt,
                        with_vectors=vectors, hnsw_ef=hnsw_ef)


def _hybrid_query(request: RankRequest, profile: RankingProfile) -> HybridQuery:
    return HybridQuery(fused_query(request.query, request.user, request.alpha), request.lexical,
                       applied_lexical_weight(request, profile), profile.lexical_scale, profile.candidates)


def ranked_hits(hits: list[IndexHit], request: RankRequest) -> list[RankedHit]:
    """``hits`` with the score parts of ``request``, in the same order: from their (D,) vectors, or from
    their scores for hits read without (:func:`needs_vectors`)."""
    return [_parts(hit, request) for hit in hits]


def _parts(hit: IndexHit, request: RankRequest) -> RankedHit:
    if hit.vector is None:  # the score is the one part there is
        semantic = hit.score if request.query is not None and request.user is None else 0.0
        personal = hit.score if request.query is None and request.user is not None else 0.0
        return RankedHit(hit, hit.lexical_score, semantic, personal)
    semantic = float(request.query @ hit.vector) if request.query is not None else 0.0
    personal = float(request.user @ hit.vector) if request.user is not None else 0.0
    return RankedHit(hit, hit.lexical_score, semantic, personal)
