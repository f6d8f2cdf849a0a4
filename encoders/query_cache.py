"""A bounded cache of query embeddings for the API, keyed by model version and the query's token ids.

Why: on two CPU cores the query encode is the largest part of a Search's CPU (the MiniLM forward pass,
docs/benchmarks.md), and shoppers repeat queries (a few head queries make much of the traffic). Keying by
token ids rather than text lets queries that differ only in what the tokenizer normalizes away (case and
spacing, for the uncased MiniLM tokenizer) share one entry, and is exact: the embedding is a function of
the ids. Keying by version means a swapped-in encoder never sees another version's vectors; the old
version's entries age out."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from cachetools import LRUCache


class QueryCache:
    """Least-recently-used map (version, token ids) -> (D,) float32 unit vector, at most ``maxsize``
    entries (0 disables it: every lookup misses and nothing is kept). Not thread-safe: the API uses it
    from its event loop only. ``hits`` and ``misses`` count lookups since start."""

    def __init__(self, maxsize: int) -> None:
        self._entries: LRUCache | None = LRUCache(maxsize) if maxsize > 0 else None
        self.hits = self.misses = 0

    def get(self, version: str, ids: Sequence[int]) -> np.ndarray | None:
        """The cached vector (read-only) or None."""
        vector = self._entries.get((version, tuple(ids))) if self._entries is not None else None
        if vector is None:
            self.misses += 1
        else:
            self.hits += 1
        return vector

    def put(self, version: str, ids: Sequence[int], vector: np.ndarray) -> None:
        """Keep a read-only copy of ``vector`` (D,) float32 for (``version``, ``ids``): every hit shares it."""
        if self._entries is not None:
            kept = np.array(vector, dtype=np.float32)
            kept.flags.writeable = False
            self._entries[(version, tuple(ids))] = kept

    def __len__(self) -> int:
        return len(self._entries) if self._entries is not None else 0
