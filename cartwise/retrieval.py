"""Ranking one request against a products collection: hybrid (default), dense or lexical, personalized
on the dense side, scored and read as a :class:`cartwise.ranking.RankingProfile` says. The gRPC API's page
pipeline (cartwise/page.py, through :func:`rank_async`, over an :class:`AsyncVectorIndex`) and the offline
evaluation (:func:`rank`, over a :class:`VectorIndex`) make the same engine calls and score parts, so the
evaluation measures what is served (docs/architecture.md, "Hybrid retrieval")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from cartwise.catalog import TEXT_DIGEST
from cartwise.diversity import collapse_identical
from cartwise.index import AsyncVectorIndex, HybridQuery, IndexHit, SearchFilter, SparseVector, VectorIndex
from cartwise.personalization import fused_query
from cartwise.ranking import RankingProfile, is_complete

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


def rank(index: VectorIndex, collection: str, request: RankRequest, profile: RankingProfile, limit: int,
         flt: SearchFilter | None = None, hnsw_ef: int | None = None, collapse: bool = True) -> list[RankedHit]:
    """The top ``limit`` products of ``collection`` for ``request``, best first; with ``collapse`` (the
    API's default) only the best-ranked of products with identical text (cartwise/diversity.py), the engine
    read growing by ``profile.fetch`` until the page fills. The engine reads rank without vectors (a deeper
    read for a collapsed page would otherwise convert up to ``profile.fetch.most`` vectors); one read by id
    then fetches the page's, for its score parts. Raises ValueError when neither a query nor a user vector
    is given, KeyError for a missing collection."""
    for fetch in profile.fetch.limits(limit, collapse):
        hits = _engine_call(index, collection, request, profile, fetch, flt, hnsw_ef)
        chosen = choose(hits, limit, collapse)
        if is_complete(len(chosen), limit, len(hits), fetch):
            break
    vectors = index.retrieve(collection, [hit.id for hit in chosen], with_payload=False) if chosen else []
    return _with_parts(chosen, vectors, request, profile)


async def rank_async(index: AsyncVectorIndex, collection: str, request: RankRequest, profile: RankingProfile,
                     limit: int, flt: SearchFilter | None = None, hnsw_ef: int | None = None,
                     collapse: bool = True, seen: Sequence[str] = ()) -> list[RankedHit]:
    """:func:`rank` over an :class:`AsyncVectorIndex` (the serving path), with ``collapse`` also leaving out
    products whose text digest is one of ``seen``; the same errors."""
    for fetch in profile.fetch.limits(limit, collapse):
        hits = await _engine_call(index, collection, request, profile, fetch, flt, hnsw_ef)
        chosen = choose(hits, limit, collapse, seen)
        if is_complete(len(chosen), limit, len(hits), fetch):
            break
    vectors = await index.retrieve(collection, [hit.id for hit in chosen], with_payload=False) if chosen else []
    return _with_parts(chosen, vectors, request, profile)


def choose(hits: list[IndexHit], limit: int, collapse: bool, seen: Sequence[str] = ()) -> list[IndexHit]:
    """The first ``limit`` of ``hits`` by score, equal scores in id order; with ``collapse`` one per identical
    text (payload ``text_digest``), none of the texts ``seen``."""
    # identical texts tie exactly, and the engine orders ties differently for different limits: without a
    # fixed tie order a deeper ranking (the next page) would start with another copy than page 1 shows
    hits = sorted(hits, key=lambda hit: (-hit.score, hit.id))
    if collapse:
        hits = collapse_identical(hits, [hit.payload.get(TEXT_DIGEST) for hit in hits], limit, seen)
    return hits[:limit]


def page(hits: list[IndexHit], request: RankRequest, limit: int, collapse: bool,
         seen: Sequence[str] = ()) -> list[RankedHit]:
    """:func:`choose` over ``hits`` that carry their (D,) vectors, as :class:`RankedHit`."""
    return ranked_hits(choose(hits, limit, collapse, seen), request)


def collapsed(ranked: list[RankedHit], seen: Sequence[str] = ()) -> list[RankedHit]:
    """``ranked`` (best first) with one product per identical text (payload ``text_digest``), none of the
    texts ``seen``: what :func:`page` keeps, applied to an already ranked list."""
    return collapse_identical(ranked, [r.hit.payload.get(TEXT_DIGEST) for r in ranked], len(ranked), seen)


def _engine_call(index: VectorIndex | AsyncVectorIndex, collection: str, request: RankRequest, profile: RankingProfile,
                 limit: int, flt: SearchFilter | None, hnsw_ef: int | None) -> Any:
    """Call the index method of the retrieval that runs, without vectors: its hits from a
    :class:`VectorIndex`, an awaitable of them from an :class:`AsyncVectorIndex`."""
    retrieval = served_retrieval(request)
    if retrieval == "lexical":
        return index.lexical_search(collection, request.lexical, limit, flt, with_vectors=False)
    if retrieval == "hybrid":
        return index.hybrid_search(collection, _hybrid_query(request, profile), limit, flt, hnsw_ef, with_vectors=False)
    return index.search(collection, fused_query(request.query, request.user, request.alpha), limit, flt,
                        hnsw_ef=hnsw_ef)


def _hybrid_query(request: RankRequest, profile: RankingProfile) -> HybridQuery:
    return HybridQuery(fused_query(request.query, request.user, request.alpha), request.lexical,
                       applied_lexical_weight(request, profile), profile.lexical_scale, profile.candidates)


def _with_parts(hits: list[IndexHit], vectors: list[IndexHit], request: RankRequest,
                profile: RankingProfile) -> list[RankedHit]:
    """``hits`` (in order, without vectors) with their (D,) vectors from ``vectors`` (a read by id) and score
    parts; a hit whose product is gone since the ranking read (deleted in between) is left out."""
    by_id = {hit.id: hit.vector for hit in vectors}
    hybrid = _hybrid_query(request, profile) if served_retrieval(request) == "hybrid" else None
    completed = []
    for hit in hits:
        vector = by_id.get(hit.id)
        if vector is not None:
            lexical = hybrid.lexical_of(hit.score, vector) if hybrid else hit.lexical_score
            completed.append(dataclasses.replace(hit, vector=vector, lexical_score=lexical))
    return ranked_hits(completed, request)


def ranked_hits(hits: list[IndexHit], request: RankRequest) -> list[RankedHit]:
    """``hits`` (with their (D,) vectors) with the score parts of ``request``, in the same order."""
    return [_parts(hit, request) for hit in hits]


def _parts(hit: IndexHit, request: RankRequest) -> RankedHit:
    semantic = float(request.query @ hit.vector) if request.query is not None else 0.0
    personal = float(request.user @ hit.vector) if request.user is not None else 0.0
    return RankedHit(hit, hit.lexical_score, semantic, personal)
