"""Vector index adapters: one interface (:class:`VectorIndex`), two Qdrant backends.

- :class:`EdgeIndex` — Qdrant Edge in-process, one shard per collection on disk (embedded default).
- :class:`QdrantServerIndex` — a Qdrant server through qdrant-client (production).
"""

from cartwise.index.base import (
    CollectionSchema,
    HybridQuery,
    IndexHit,
    IndexPoint,
    SearchFilter,
    SparseVector,
    VectorIndex,
)
from cartwise.index.edge import EdgeIndex
from cartwise.index.server import QdrantServerIndex, qdrant_client_options

PRODUCTS_SCHEMA = CollectionSchema(keyword=("category_prefixes", "brand", "stock"), float=("price",), lexical=True)
USERS_SCHEMA = CollectionSchema()


def open_index(settings) -> VectorIndex:
    """The index the settings name: a Qdrant server at ``qdrant_url``, else Qdrant Edge under ``data_dir``."""
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        return QdrantServerIndex(QdrantClient(**qdrant_client_options(settings)))
    return EdgeIndex(settings.index_dir, settings.edge_search_threads)


__all__ = [
    "CollectionSchema", "EdgeIndex", "HybridQuery", "IndexHit", "IndexPoint", "PRODUCTS_SCHEMA", "QdrantServerIndex",
    "SearchFilter", "SparseVector", "USERS_SCHEMA", "VectorIndex", "open_index",
]
