"""Validation during training: nDCG@10 and friends on held-out queries, by exact search.

Scoring the full 54,667-product catalog at every validation would cost more than the training steps
between them on 2 cores, so in-training validation uses a fixed sample of validation queries and a
corpus of their judged products plus random unjudged distractors. Final figures (docs/training.md)
come from the whole validation split over the whole catalog."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data import LabeledQuery
from trainer.encoding import TextEncoder
from trainer.evaluation.metrics import evaluate_rankings, exact_top_k

TOP_K = 100


@dataclass
class Validator:
    """Fixed validation queries and corpus (catalog indices); :meth:`run` scores a model on them."""

    queries: list[LabeledQuery]
    corpus: np.ndarray

    @classmethod
    def sample(cls, val: list[LabeledQuery], n_products: int, n_queries: int | None, distractors: int,
               seed: int = 0) -> "Validator":
        """``n_queries`` random validation queries (None: all) and a corpus of their judged products
        plus ``distractors`` random others (``distractors`` >= catalog size: the whole catalog)."""
        rng = np.random.default_rng(seed)
        chosen = val if n_queries is None or n_queries >= len(val) else \
            [val[i] for i in sorted(rng.choice(len(val), n_queries, replace=False))]
        judged = {p for q in chosen for p in q.judged}
        if distractors + len(judged) >= n_products:
            return cls(chosen, np.arange(n_products))
        others = np.setdiff1d(np.arange(n_products), np.fromiter(judged, np.int64))
        return cls(chosen, np.union1d(np.fromiter(judged, np.int64), rng.choice(others, distractors, replace=False)))

    def run(self, encoder: TextEncoder, k: int = TOP_K) -> dict:
        """Recall@10/100, nDCG@10, MRR@10 (trainer.evaluation.metrics conventions) of ``encoder``."""
        vectors = encoder.catalog(self.corpus)
        qvecs = encoder.query_matrix([q.text for q in self.queries])
        top = exact_top_k(qvecs, vectors, min(k, len(self.corpus) - 1))
        rankings = {q.text: [str(int(self.corpus[j])) for j in row] for q, row in zip(self.queries, top)}
        qrels = {q.text: {str(p): g for p, g in q.judged.items()} for q in self.queries}
        return evaluate_rankings(rankings, qrels)
