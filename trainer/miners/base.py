"""The miner interface and the one rule every miner shares: never return an excluded product."""

from __future__ import annotations

from typing import Iterable, Protocol

import numpy as np


class Miner(Protocol):
    """Mines negatives for one training example."""

    name: str

    def mine(self, query: int, positive: int, excluded: set[int], k: int, step: int) -> list[int]:
        """k catalog indices for train query ``query`` (its index in the train list) with positive
        ``positive``; none in ``excluded`` (which contains the positive) and no repeats."""
        ...


def take_allowed(candidates: Iterable[int], excluded: set[int], k: int, rng: np.random.Generator,
                 n_products: int) -> list[int]:
    """The first k of ``candidates`` not excluded, topped up with uniform random catalog products
    when the candidates run out (a miner never returns fewer than k)."""
    chosen: list[int] = []
    for c in candidates:
        c = int(c)
        if c not in excluded and c not in chosen:
            chosen.append(c)
            if len(chosen) == k:
                return chosen
    if len(excluded) + len(chosen) + k > n_products:
        raise ValueError("the catalog is too small to mine that many negatives")
    while len(chosen) < k:
        c = int(rng.integers(n_products))
        if c not in excluded and c not in chosen:
            chosen.append(c)
    return chosen


def sample_ranked(ranked: np.ndarray, excluded: set[int], k: int, rng: np.random.Generator,
                  n_products: int) -> list[int]:
    """k negatives drawn uniformly from a ranked candidate list (not always its top k: the very top of
    a retriever's list is where unlabelled positives concentrate), excluded products skipped."""
    return take_allowed(rng.permutation(ranked), excluded, k, rng, n_products)
