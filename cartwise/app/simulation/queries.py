"""What the simulated shoppers search for: Home Depot **train-split** queries with a Zipf-like head.

Only queries :func:`trainer.data.split_of` puts in the train split are ever issued: validation queries (the
gate's and the evaluation's) and the held-back ones (not in shared/data at all) never reach the service's
logs, so a cycle that trains on simulated traffic cannot see them.

Real search logs repeat a few queries very often and most rarely: query frequency against its rank follows
a power law (Zipf's law; Baeza-Yates, Gionis, Junqueira et al., "The impact of caching on search engines",
SIGIR 2007). Home Depot's judgments carry no frequencies, so a seeded shuffle decides which queries form the
head, and the query at rank k (1-based) is drawn with probability k^(-s) / Σ_j j^(-s), s = 1 by default
(Zipf's classic exponent; :data:`ZIPF_EXPONENT`)."""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Sequence

from trainer.data import split_of

ZIPF_EXPONENT = 1.0


def train_queries(qrels: dict[str, dict[str, float]]) -> list[str]:
    """The train-split queries of ``qrels`` (query -> judged products), in the order given."""
    return [query for query in qrels if split_of(query) == "train"]


def zipf_weights(n: int, exponent: float = ZIPF_EXPONENT) -> list[float]:
    """Probabilities of ranks 1..n under a Zipf law: k^(-exponent), normalized to sum to 1. Raises ValueError
    for n < 1 or a negative exponent."""
    if n < 1 or exponent < 0:
        raise ValueError(f"need n >= 1 and exponent >= 0, got n={n}, exponent={exponent}")
    raw = [k ** -exponent for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


class QuerySampler:
    """Draws queries with a Zipf-like head: ``queries`` are shuffled with ``rng`` once (the head is the first
    ones after the shuffle), then each draw picks rank k with probability :func:`zipf_weights`. Raises
    ValueError for no queries."""

    def __init__(self, queries: Sequence[str], rng: random.Random, exponent: float = ZIPF_EXPONENT) -> None:
        if not queries:
            raise ValueError("no queries to draw from")
        self.ranked = list(queries)
        rng.shuffle(self.ranked)
        self._cumulative = list(itertools.accumulate(zipf_weights(len(self.ranked), exponent)))

    def draw(self, rng: random.Random) -> str:
        """One query, drawn with ``rng``."""
        k = bisect.bisect_left(self._cumulative, rng.random() * self._cumulative[-1])
        return self.ranked[min(k, len(self.ranked) - 1)]
