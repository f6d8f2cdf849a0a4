"""ANCE-style negatives: the current model's own top-K for each query, minus positives, refreshed as
the model trains (Xiong et al. 2021, "Approximate Nearest Neighbor Negative Contrastive Learning",
section 4). The trainer calls :meth:`refresh` with fresh rankings every ``ance_refresh_steps`` (about
one epoch of the CPU configuration). The top-K comes from exact search over the re-embedded catalog:
at 54k products a matrix product is cheaper than building an HNSW index at every refresh."""

from __future__ import annotations

import numpy as np

from trainer.miners.base import sample_ranked


class ANCEMiner:
    """Samples from the latest (Q, depth) rankings given to :meth:`refresh`."""

    name = "ance"

    def __init__(self, n_products: int, seed: int = 0) -> None:
        self.n_products, self.rng = n_products, np.random.default_rng(seed)
        self.top: np.ndarray | None = None

    def refresh(self, top: np.ndarray) -> None:
        """Install (Q, depth) int64 catalog indices per train query from the current model."""
        self.top = top

    def mine(self, query: int, positive: int, excluded: set[int], k: int, step: int) -> list[int]:
        if self.top is None:
            raise RuntimeError("ANCEMiner.refresh must run before mining")
        return sample_ranked(self.top[query], excluded, k, self.rng, self.n_products)
