"""Uniformly random catalog negatives (the easy baseline)."""

from __future__ import annotations

import numpy as np

from trainer.miners.base import take_allowed


class RandomMiner:
    """k uniform random catalog products per example."""

    name = "random"

    def __init__(self, n_products: int, seed: int = 0) -> None:
        self.n_products, self.rng = n_products, np.random.default_rng(seed)

    def mine(self, query: int, positive: int, excluded: set[int], k: int, step: int) -> list[int]:
        return take_allowed((), excluded, k, self.rng, self.n_products)
