"""An :class:`AsyncVectorIndex` over a blocking :class:`VectorIndex` that runs each read inline on the
event loop: the serving path's reads of Qdrant Edge, the embedded default.

Inline, not on a thread: an Edge read is one in-process query of 1-3 ms CPU, and index reads on two
threads made Search slower under gRPC load (docs/benchmarks.md: 99.6 vs 188.2 served QPS; the Python half
of every ranking then fought the event loop for the GIL). A Qdrant server is read through
:class:`cartwise.index.server.AsyncQdrantServerIndex` instead, whose round trips do not hold the loop."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cartwise.index.base import HybridQuery, IndexHit, SearchFilter, SparseVector, VectorIndex


class InlineAsyncIndex:
    """:class:`cartwise.index.AsyncVectorIndex` reading ``index`` inline (module docstring). ``close``
    leaves ``index`` open: its owner closes it."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index

    async def has_collection(self, name: str) -> bool:
        return self.index.has_collection(name)

    async def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = True,
                       with_payload: bool = True) -> list[IndexHit]:
        return self.index.retrieve(name, ids, with_vectors, with_payload)

    async def search(self, name: str, vector: np.ndarray, limit: int, flt: SearchFilter | None = None,
                     with_vectors: bool = False, exact: bool = False, hnsw_ef: int | None = None) -> list[IndexHit]:
        return self.index.search(name, vector, limit, flt, with_vectors, exact, hnsw_ef)

    async def lexical_search(self, name: str, query: SparseVector, limit: int, flt: SearchFilter | None = None,
                             with_vectors: bool = False) -> list[IndexHit]:
        return self.index.lexical_search(name, query, limit, flt, with_vectors)

    async def hybrid_search(self, name: str, query: HybridQuery, limit: int, flt: SearchFilter | None = None,
                            hnsw_ef: int | None = None, with_vectors: bool = True) -> list[IndexHit]:
        return self.index.hybrid_search(name, query, limit, flt, hnsw_ef, with_vectors)

    async def scroll(self, name: str, limit: int, flt: SearchFilter | None = None, order_by: str | None = None,
                     with_vectors: bool = False) -> list[IndexHit]:
        return self.index.scroll(name, limit, flt, order_by, with_vectors)

    async def facet(self, name: str, key: str, limit: int, flt: SearchFilter | None = None,
                    exact: bool = True) -> list[tuple[str, int]]:
        return self.index.facet(name, key, limit, flt, exact)

    async def count(self, name: str) -> int:
        return self.index.count(name)

    async def close(self) -> None:
        return None
