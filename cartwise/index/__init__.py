"""Vector index adapters: one interface (:class:`VectorIndex`), two Qdrant backends.

- :class:`EdgeIndex` — Qdrant Edge in-process, one shard per collection on disk (embedded default).
- :class:`QdrantServerIndex` — a Qdrant server through qdrant-client (production).

The serving path reads through :class:`AsyncVectorIndex` (:func:`open_reader`): a Qdrant server through
:class:`AsyncQdrantServerIndex`, Qdrant Edge through :class:`InlineAsyncIndex`.
"""

from cartwise.index.base import (
    MEMBERS,
    TEXT_DIGEST,
    AsyncVectorIndex,
    CollectionSchema,
    HybridQuery,
    IndexHit,
    IndexPoint,
    IndexUnavailable,
    SearchFilter,
    SparseVector,
    VectorIndex,
)
from cartwise.index.edge import EdgeIndex
from cartwise.index.inline import InlineAsyncIndex
from cartwise.index.server import AsyncQdrantServerIndex, QdrantServerIndex, qdrant_client_options

PRODUCTS_SCHEMA = CollectionSchema(keyword=("category_prefixes", "brand", "stock", TEXT_DIGEST), float=("price",),
                                   lexical=True)
# one point per product text (cartwise/groups.py): the fields its products share on the point, theirs nested
GROUPS_SCHEMA = CollectionSchema(keyword=("category_prefixes", "brand", TEXT_DIGEST, f"{MEMBERS}[].stock",
                                          f"{MEMBERS}[].id"), float=(f"{MEMBERS}[].price",), lexical=True)
USERS_SCHEMA = CollectionSchema()


def open_index(settings) -> VectorIndex:
    """The index the settings name: a Qdrant server at ``qdrant_url``, else Qdrant Edge under ``data_dir``."""
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        return QdrantServerIndex(QdrantClient(**qdrant_client_options(settings)))
    return EdgeIndex(settings.index_dir, settings.edge_search_threads)


def open_reader(settings, index: VectorIndex | None) -> AsyncVectorIndex:
    """The serving path's reads: a Qdrant server at ``qdrant_url`` through an ``AsyncQdrantClient`` of its own
    (close it), else ``index`` (Qdrant Edge; required then) read inline. Raises ValueError for neither, OSError
    for an unreadable CA file."""
    if settings.qdrant_url:
        from qdrant_client import AsyncQdrantClient

        return AsyncQdrantServerIndex(AsyncQdrantClient(**qdrant_client_options(settings)))
    if index is None:
        raise ValueError("no index to read: set CARTWISE_QDRANT_URL or pass the Qdrant Edge index")
    return InlineAsyncIndex(index)


__all__ = [
    "AsyncQdrantServerIndex", "AsyncVectorIndex", "CollectionSchema", "EdgeIndex", "HybridQuery", "IndexHit",
    "IndexPoint", "IndexUnavailable", "GROUPS_SCHEMA", "MEMBERS", "TEXT_DIGEST", "InlineAsyncIndex", "PRODUCTS_SCHEMA", "QdrantServerIndex", "SearchFilter",
    "SparseVector", "USERS_SCHEMA", "VectorIndex", "open_index", "open_reader",
]
