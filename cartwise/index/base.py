"""The vector index interface and its backend-neutral types."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence

import numpy as np

from cartwise.ranking import fusion_coefficients, lexical_part, prefetch_depth

CATEGORY_SEPARATOR = " > "  # joins category levels in the indexed ``category_prefixes`` keywords
DENSE, LEXICAL = "dense", "lexical"  # the named dense vector of every collection; products' sparse vector
TEXT_DIGEST = "text_digest"  # the payload key of a product's text digest (cartwise.catalog.text_digest)
MEMBERS = "members"  # a text group's products, each an object in this payload array (cartwise/groups.py)


@dataclass(frozen=True, slots=True)
class CollectionSchema:
    """Payload fields to index, by type. Booleans are stored as keywords: Qdrant Edge 0.9 matches a
    Python bool as the integer 1/0, which never equals a JSON bool payload."""

    keyword: tuple[str, ...] = ()
    float: tuple[str, ...] = ()
    lexical: bool = False  # a sparse LEXICAL vector per point, IDF computed by the engine


@dataclass(frozen=True, slots=True)
class SparseVector:
    """A sparse lexical vector: ``indices`` term ids (uint32, distinct), ``values`` their weights (BM25
    term-frequency parts; the engine multiplies by IDF at query time)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.indices)


@dataclass(frozen=True, slots=True)
class IndexPoint:
    """A point to upsert: ``id`` a UUID string (see ``cartwise.catalog.point_id``), ``vector`` (D,) float32,
    ``lexical`` its sparse vector (collections created with ``CollectionSchema.lexical`` only)."""

    id: str
    vector: np.ndarray
    payload: dict
    lexical: SparseVector | None = None


@dataclass(frozen=True, slots=True)
class IndexHit:
    """A search or retrieve result; ``score`` is the query's score (inner product, BM25 or the hybrid
    fusion; 0 for retrieve), ``vector`` (D,) float32 or None, ``lexical_score`` the BM25 score of a hybrid
    or lexical hit (0 when no query term matches)."""

    id: str
    score: float
    payload: dict
    vector: np.ndarray | None = None
    lexical_score: float = 0.0


@dataclass(frozen=True, slots=True)
class HybridQuery:
    """One hybrid retrieval (docs/architecture.md, "Hybrid retrieval"): the union of the top
    ``candidates`` by BM25 (``lexical``) and by inner product with ``dense`` ((D,) float32, q̂ + α·û) is
    scored by the ranking profile's fusion (:func:`cartwise.ranking.fuse`) with w = ``lexical_weight`` in
    [0, 1] and κ = ``lexical_scale``, so every candidate gets both terms. A backend translates it with
    :meth:`depth` and :meth:`coefficients`."""

    dense: np.ndarray
    lexical: SparseVector
    lexical_weight: float
    lexical_scale: float
    candidates: int

    def depth(self, limit: int) -> int:
        """Results each side prefetches for ``limit`` fused hits (:func:`cartwise.ranking.prefetch_depth`)."""
        return prefetch_depth(self.candidates, limit)

    def coefficients(self) -> tuple[float, float]:
        """(factor of BM25, factor of the inner product) of the fused score
        (:func:`cartwise.ranking.fusion_coefficients`)."""
        return fusion_coefficients(self.lexical_weight, self.lexical_scale)

    def lexical_of(self, score: float, vector: np.ndarray) -> float:
        """BM25(q, p) of a hit from its fused ``score`` and (D,) ``vector`` (0 when w = 0)."""
        return lexical_part(score, float(self.dense @ vector), self.lexical_weight, self.lexical_scale)


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Payload filter for product search; every set field must hold (AND).

    ``category_prefix`` is a path from the root; ``brands`` match any (lower-cased);
    ``price_min``/``price_max`` are inclusive; ``in_stock`` None means either (matched on the payload's
    ``stock`` keyword, "in" or "out"); ``ids`` non-empty keeps only those product point ids, ``exclude_ids``
    drops those; ``texts`` non-empty keeps only the products whose text digest is one of them,
    ``exclude_texts`` drops those.

    ``grouped``: the filter is applied to a text-groups collection (cartwise/groups.py), where a point is one
    text and its products are the objects of its ``members`` array: the fields a text's products share
    (category, brand, text) are matched on the point, the others (price, stock, ids) by a nested condition,
    so a group matches when at least one of its products matches them all."""

    category_prefix: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool | None = None
    exclude_ids: frozenset[str] = field(default_factory=frozenset)
    ids: frozenset[str] = field(default_factory=frozenset)
    texts: frozenset[str] = field(default_factory=frozenset)
    exclude_texts: frozenset[str] = field(default_factory=frozenset)
    grouped: bool = False

    def is_empty(self) -> bool:
        """True when the filter restricts nothing."""
        return replace(self, grouped=False) == SearchFilter()

    def of_groups(self) -> "SearchFilter":
        """This filter applied to a text-groups collection (``grouped``)."""
        return replace(self, grouped=True)

    def restricts_products(self) -> bool:
        """Whether a condition on a product's own fields (price, stock, ids) is set: the nested part of a
        ``grouped`` filter."""
        return (self.price_min is not None or self.price_max is not None or self.in_stock is not None
                or bool(self.ids) or bool(self.exclude_ids))


def as_vector(raw) -> np.ndarray | None:
    """A point's DENSE vector as (D,) float32 from Qdrant's {name: vector} map (or a bare list)."""
    if raw is None:
        return None
    if isinstance(raw, dict):
        raw = raw.get(DENSE)
    return None if raw is None else np.asarray(raw, dtype=np.float32)


def to_hit(point, with_vectors: bool, lexical_score: float = 0.0) -> IndexHit:
    """An :class:`IndexHit` of a scored point of either backend (``id``, ``score``, ``payload``, ``vector``)."""
    return IndexHit(str(point.id), float(point.score), point.payload or {},
                    as_vector(point.vector) if with_vectors else None, lexical_score)


def hybrid_hits(points, query: HybridQuery, with_vectors: bool = True) -> list[IndexHit]:
    """The hits of a hybrid query's scored points, each with its BM25 when fetched ``with_vectors`` (the
    BM25 is recovered from the fused score and the vector: :meth:`HybridQuery.lexical_of`), else 0."""
    if not with_vectors:
        return [IndexHit(str(point.id), float(point.score), point.payload or {}) for point in points]
    hits = []
    for point in points:
        vector = as_vector(point.vector)
        hits.append(IndexHit(str(point.id), float(point.score), point.payload or {}, vector,
                             query.lexical_of(float(point.score), vector)))
    return hits


def facet_counts(hits) -> list[tuple[str, int]]:
    """(value, count) pairs of an engine's facet hits (``value``, ``count``), most frequent first, ties by
    value, so every backend answers in one order."""
    return sorted(((str(h.value), int(h.count)) for h in hits), key=lambda vc: (-vc[1], vc[0]))


def stock_keyword(in_stock: bool) -> str:
    """The ``stock`` payload keyword of an availability: "in" or "out"."""
    return "in" if in_stock else "out"


class IndexUnavailable(ConnectionError):
    """The index engine did not answer: a Qdrant server unreachable or refusing the connection (Qdrant Edge,
    in process, never raises it). A retry may succeed."""


class VectorIndex(Protocol):
    """Collections of unit vectors scored by inner product (Qdrant ``Dot``).

    Methods raise KeyError for a collection that does not exist (except ``has_collection``
    and ``drop_collection``), :class:`IndexUnavailable` when a server does not answer; a vector of the wrong
    size raises the backend's own error.

    ``remote``: whether calls are network round trips (a Qdrant server); the stream worker then makes them
    off its event loop (streams/index_calls.py)."""

    remote: bool

    def create_collection(self, name: str, dim: int, schema: CollectionSchema) -> None:
        """Create ``name`` with ``dim``-d vectors and payload indexes; no-op if it exists."""

    def has_collection(self, name: str) -> bool:
        """Whether ``name`` exists."""

    def drop_collection(self, name: str) -> None:
        """Delete ``name`` and its data; no-op if it does not exist."""

    def collections(self) -> list[str]:
        """Names of existing collections, sorted."""

    def upsert(self, name: str, points: Sequence[IndexPoint]) -> None:
        """Insert or replace points by id."""

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete points by id; missing ids are ignored."""

    def set_payload(self, name: str, point: str, payload: dict) -> None:
        """Replace the keys of ``payload`` in the payload of point ``point`` (its other keys and its vectors
        are kept). A missing point raises the backend's own error."""

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = True,
                 with_payload: bool = True) -> list[IndexHit]:
        """Points by id (missing ids are skipped), in no particular order, score 0; without their payload
        (an empty dict) when not ``with_payload``."""

    def search(self, name: str, vector: np.ndarray, limit: int, flt: SearchFilter | None = None,
               with_vectors: bool = False, exact: bool = False, hnsw_ef: int | None = None) -> list[IndexHit]:
        """Top ``limit`` points by inner product with ``vector`` (D,), best first; ``exact`` bypasses HNSW,
        ``hnsw_ef`` sizes the HNSW candidate list (None: the engine's default; larger = better recall)."""

    def lexical_search(self, name: str, query: SparseVector, limit: int, flt: SearchFilter | None = None,
                       with_vectors: bool = False) -> list[IndexHit]:
        """Top ``limit`` points by BM25 (the query's term weights · the points' sparse vectors · the
        engine's IDF), best first; only points sharing a term with ``query``. Raises ValueError when
        ``name`` has no lexical vectors."""

    def hybrid_search(self, name: str, query: HybridQuery, limit: int, flt: SearchFilter | None = None,
                      hnsw_ef: int | None = None, with_vectors: bool = True) -> list[IndexHit]:
        """Top ``limit`` points by the fused score of ``query`` in one engine query (prefetches, a
        rescoring of their union, a score formula); ``with_vectors``, hits carry their dense vector and
        ``lexical_score`` (else neither: 0). ``flt`` applies to both sides. Raises ValueError when ``name``
        has no lexical vectors."""

    def scroll(self, name: str, limit: int, flt: SearchFilter | None = None, order_by: str | None = None,
               with_vectors: bool = False) -> list[IndexHit]:
        """Up to ``limit`` points matching ``flt`` (score 0): by the float payload field ``order_by``
        descending (it needs a float payload index), else in the engine's id order."""

    def facet(self, name: str, key: str, limit: int, flt: SearchFilter | None = None,
              exact: bool = True) -> list[tuple[str, int]]:
        """The engine's facet counts of the keyword payload field ``key`` (it needs a keyword payload index)
        over the points matching ``flt``: up to ``limit`` (value, number of points with it) pairs, most
        frequent first, ties by value. A point with a list of values counts once for each. Not ``exact``,
        the engine may estimate counts over large filtered sets; over a set of ids it counts the points
        themselves (measured equal to exact on Edge, and 15-100x faster: 0.1-0.9 ms vs 14 ms for 200 ids)."""

    def count(self, name: str) -> int:
        """Number of points in ``name``."""

    def close(self) -> None:
        """Flush and release resources."""


class AsyncVectorIndex(Protocol):
    """The reads of the serving path (gRPC API, model follower, status), as coroutines: the methods of
    :class:`VectorIndex` of the same names and semantics (KeyError for a missing collection,
    :class:`IndexUnavailable` for a server that does not answer, ValueError for a lexical query on a
    collection without lexical vectors). Implementations:
    :class:`cartwise.index.server.AsyncQdrantServerIndex` (a Qdrant server through ``AsyncQdrantClient``)
    and :class:`cartwise.index.inline.InlineAsyncIndex` (a :class:`VectorIndex` read inline, for Qdrant Edge)."""

    async def has_collection(self, name: str) -> bool:
        """Whether ``name`` exists."""

    async def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = True,
                       with_payload: bool = True) -> list[IndexHit]:
        """As :meth:`VectorIndex.retrieve`."""

    async def search(self, name: str, vector: np.ndarray, limit: int, flt: SearchFilter | None = None,
                     with_vectors: bool = False, exact: bool = False, hnsw_ef: int | None = None) -> list[IndexHit]:
        """As :meth:`VectorIndex.search`."""

    async def lexical_search(self, name: str, query: SparseVector, limit: int, flt: SearchFilter | None = None,
                             with_vectors: bool = False) -> list[IndexHit]:
        """As :meth:`VectorIndex.lexical_search`."""

    async def hybrid_search(self, name: str, query: HybridQuery, limit: int, flt: SearchFilter | None = None,
                            hnsw_ef: int | None = None, with_vectors: bool = True) -> list[IndexHit]:
        """As :meth:`VectorIndex.hybrid_search`."""

    async def scroll(self, name: str, limit: int, flt: SearchFilter | None = None, order_by: str | None = None,
                     with_vectors: bool = False) -> list[IndexHit]:
        """As :meth:`VectorIndex.scroll`."""

    async def facet(self, name: str, key: str, limit: int, flt: SearchFilter | None = None,
                    exact: bool = True) -> list[tuple[str, int]]:
        """As :meth:`VectorIndex.facet`."""

    async def count(self, name: str) -> int:
        """Number of points in ``name``."""

    async def close(self) -> None:
        """Release what this reader holds (a connection; an index read inline stays open)."""
