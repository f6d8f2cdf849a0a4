"""Validation during training: nDCG@10 and friends on held-out queries, by exact search.

Scoring the full 54,667-product catalog at every validation would cost more than the training steps
between them on 2 cores, so in-training validation uses a fixed sample of validation queries and a
corpus of their judged products plus random unjudged distractors. Final figures (docs/training.md)
come from the whole validation split over the whole catalog.

With lexical scores (:meth:`Validator.hybrid`) the ranking scored is the served hybrid one
(cartwise.ranking.fuse, the fusion the engine queries are built from), taken exactly over the corpus: the served query fuses only the union of
each side's top candidates, which changes the top 10 only when a product outside both candidate lists
would win on the fused score. The index-served figure comes from ``cartwise eval`` and the gate."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cartwise.ranking import fuse
from trainer.data import LabeledQuery
from trainer.encoding import TextEncoder
from trainer.evaluation.metrics import evaluate_rankings, exact_top_k, scalar_metrics, top_k_rows
from trainer.lexical_scores import LexicalScores

TOP_K = 100


@dataclass
class Validator:
    """Fixed validation queries and corpus (catalog indices); :meth:`run` scores a model on them, by
    the dense ranking, or the hybrid one when ``lexical`` (BM25 over the catalog, with w and κ) is set."""

    queries: list[LabeledQuery]
    corpus: np.ndarray
    lexical: LexicalScores | None = None
    _bm25: np.ndarray | None = None  # (Q, corpus) BM25 scores, computed once: they do not depend on the model

    def hybrid(self, lexical: LexicalScores) -> "Validator":
        """This validator scoring the hybrid ranking with ``lexical``'s BM25, w and κ."""
        return replace(self, lexical=lexical, _bm25=None)

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

    def run(self, encoder: TextEncoder, k: int = TOP_K, with_dense: bool = False) -> dict:
        """Recall@10/100, nDCG@10, MRR@10 (trainer.evaluation.metrics conventions) of ``encoder``; with
        ``with_dense`` on a hybrid validator, also the dense ranking's figures under ``"dense"``, from the
        same vectors (so a table can show what the fusion adds)."""
        vectors = encoder.catalog(self.corpus)
        qvecs = encoder.query_matrix([q.text for q in self.queries])
        k = min(k, len(self.corpus) - 1)
        if self.lexical is None:
            return self._evaluate(exact_top_k(qvecs, vectors, k))
        metrics = self._evaluate(self._hybrid_top_k(qvecs, vectors, k))
        if with_dense:
            metrics["dense"] = scalar_metrics(self._evaluate(exact_top_k(qvecs, vectors, k)))
        return metrics

    def _evaluate(self, top: np.ndarray) -> dict:
        rankings = {q.text: [str(int(self.corpus[j])) for j in row] for q, row in zip(self.queries, top)}
        qrels = {q.text: {str(p): g for p, g in q.judged.items()} for q in self.queries}
        return evaluate_rankings(rankings, qrels)

    def _hybrid_top_k(self, qvecs: np.ndarray, vectors: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
        if self._bm25 is None:
            self._bm25 = self.lexical.scores([q.text for q in self.queries], self.corpus)
        w, scale = self.lexical.params.weight, self.lexical.params.scale
        out = np.zeros((len(qvecs), k), dtype=np.int64)
        for start in range(0, len(qvecs), chunk):
            fused = fuse(qvecs[start:start + chunk] @ vectors.T, self._bm25[start:start + chunk], w, scale)
            out[start:start + chunk] = top_k_rows(fused, k)
        return out
