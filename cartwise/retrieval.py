"""Ranking one request against a products collection: hybrid (default), dense or lexical, personalized
on the dense side. The gRPC API (:func:`rank_async`, over an :class:`AsyncVectorIndex`) and the offline
evaluation (:func:`rank`, over a :class:`VectorIndex`) make the same engine call and score parts, so the
evaluation measures what is served (docs/architecture.md, "Hybrid retrieval")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from cartwise.catalog import TEXT_DIGEST
from cartwise.diversity import collapse_identical, fetch_limits, is_complete
from cartwise.index import AsyncVectorIndex, HybridQuery, IndexHit, SearchFilter, SparseVector, VectorIndex
from cartwise.personalization import fused_query
from cartwise.settings import Lexical

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


def applied_lexical_weight(request: RankRequest, params: Lexical) -> float:
    """w of the fusion that runs: the request's, else the service's; 0 when the retrieval is not hybrid."""
    if served_retrieval(request) != "hybrid":
        return 0.0
    return params.weight if request.lexical_weight is None else request.lexical_weight


def rank(index: VectorIndex, collection: str, request: RankRequest, params: Lexical, limit: int,
         flt: SearchFilter | None = None, hnsw_ef: int | None = None, collapse: bool = True) -> list[RankedHit]:
    """The top ``limit`` products of ``collection`` for ``request``, best first; with ``collapse`` (the
    API's default) only the best-ranked of products with identical text (cartwise/diversity.py). Raises
    ValueError when neither a query nor a user vector is given, KeyError for a missing collection."""
    for fetch in fetch_limits(limit, collapse):
        hits = _engine_call(index, collection, request, params, fetch, flt, hnsw_ef)
        ranked = page(hits, request, limit, collapse)
        if is_complete(len(ranked), limit, len(hits), fetch):
            break
    return ranked


async def rank_async(index: AsyncVectorIndex, collection: str, request: RankRequest, params: Lexical, limit: int,
                     flt: SearchFilter | None = None, hnsw_ef: int | None = None, collapse: bool = True,
                     seen: Sequence[str] = ()) -> list[RankedHit]:
    """:func:`rank` over an :class:`AsyncVectorIndex` (the serving path), with ``collapse`` also leaving out
    products whose text digest is one of ``seen``; the same errors."""
    for fetch in fetch_limits(limit, collapse):
        hits = await _engine_call(index, collection, request, params, fetch, flt, hnsw_ef)
        ranked = page(hits, request, limit, collapse, seen)
        if is_complete(len(ranked), limit, len(hits), fetch):
            break
    return ranked


def page(hits: list[IndexHit], request: RankRequest, limit: int, collapse: bool,
         seen: Sequence[str] = ()) -> list[RankedHit]:
    """The first ``limit`` of ``hits`` (with their (D,) vectors) by score, equal scores in id order, as
    :class:`RankedHit`; with ``collapse`` one per identical text (payload ``text_digest``), none of the
    texts ``seen``."""
    # identical texts tie exactly, and the engine orders ties differently for different limits: without a
    # fixed tie order a deeper ranking (the next page) would start with another copy than page 1 shows
    hits = sorted(hits, key=lambda hit: (-hit.score, hit.id))
    if collapse:
        hits = collapse_identical(hits, [hit.payload.get(TEXT_DIGEST) for hit in hits], limit, seen)
    return ranked_hits(hits[:limit], request)


def collapsed(ranked: list[RankedHit], seen: Sequence[str] = ()) -> list[RankedHit]:
    """``ranked`` (best first) with one product per identical text (payload ``text_digest``), none of the
    texts ``seen``: what :func:`page` keeps, applied to an already ranked list."""
    return collapse_identical(ranked, [r.hit.payload.get(TEXT_DIGEST) for r in ranked], len(ranked), seen)


def _engine_call(index: VectorIndex | AsyncVectorIndex, collection: str, request: RankRequest, params: Lexical,
                 limit: int, flt: SearchFilter | None, hnsw_ef: int | None) -> Any:
    """Call the index method of the retrieval that runs: its hits (each with its dense vector) from a
    :class:`VectorIndex`, an awaitable of them from an :class:`AsyncVectorIndex`."""
    retrieval = served_retrieval(request)
    if retrieval == "lexical":
        return index.lexical_search(collection, request.lexical, limit, flt, with_vectors=True)
    if retrieval == "hybrid":
        hybrid = HybridQuery(fused_query(request.query, request.user, request.alpha), request.lexical,
                             applied_lexical_weight(request, params), params.scale, params.candidates)
        return index.hybrid_search(collection, hybrid, limit, flt, hnsw_ef)
    return index.search(collection, fused_query(request.query, request.user, request.alpha), limit, flt,
                        with_vectors=True, hnsw_ef=hnsw_ef)


def ranked_hits(hits: list[IndexHit], request: RankRequest) -> list[RankedHit]:
    """``hits`` (with their (D,) vectors) with the score parts of ``request``, in the same order."""
    return [_parts(hit, request) for hit in hits]


def _parts(hit: IndexHit, request: RankRequest) -> RankedHit:
    semantic = float(request.query @ hit.vector) if request.query is not None else 0.0
    personal = float(request.user @ hit.vector) if request.user is not None else 0.0
    return RankedHit(hit, hit.lexical_score, semantic, personal)
