"""BM25-mined negatives: products lexically close to the query (Karpukhin et al. 2020, DPR, section 3.2)."""

from __future__ import annotations

import numpy as np

from trainer.miners.base import sample_ranked


class BM25Miner:
    """Samples from each train query's BM25 top ``depth`` (computed once: the ranking does not move)."""

    name = "bm25"

    def __init__(self, top: np.ndarray, n_products: int, seed: int = 0) -> None:
        """``top`` (Q, depth) int64 catalog indices per train query, best first."""
        self.top, self.n_products, self.rng = top, n_products, np.random.default_rng(seed)

    @classmethod
    def build(cls, product_texts: list[str], queries: list[str], depth: int = 50, seed: int = 0) -> "BM25Miner":
        """Index ``product_texts`` with bm25s and rank every query once."""
        from trainer.evaluation.homedepot import bm25_index, bm25_top_k

        top = np.asarray(bm25_top_k(bm25_index(product_texts), queries, depth), dtype=np.int64)
        return cls(top, len(product_texts), seed)

    def mine(self, query: int, positive: int, excluded: set[int], k: int, step: int) -> list[int]:
        return sample_ranked(self.top[query], excluded, k, self.rng, self.n_products)
