"""Ranking metrics over one query's ranked list and its qrels (graded judgments).

Conventions (issue #3): a product is relevant when its grade >= ``RELEVANT_AT`` (2.5 on Home Depot's
1..3 scale); nDCG uses linear gain ``grade - 1`` with the ideal DCG taken over the query's judged
products; unjudged products count as not relevant (gain 0). Functions return None for a query the
metric is undefined on (no relevant product for Recall and MRR, ideal DCG 0 for nDCG), so callers skip
it rather than count it as 0. Ties in the ranked list keep the order given: the retriever decides."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

RELEVANT_AT = 2.5


def relevant(qrels: Mapping[str, float], threshold: float = RELEVANT_AT) -> set[str]:
    """Product ids whose grade is at least ``threshold``."""
    return {pid for pid, grade in qrels.items() if grade >= threshold}


def recall_at(ranked: Sequence[str], qrels: Mapping[str, float], k: int) -> float | None:
    """|relevant ∩ top k| / |relevant|; None when the query has no relevant product."""
    rel = relevant(qrels)
    if not rel:
        return None
    return len(rel.intersection(ranked[:k])) / len(rel)


def mrr_at(ranked: Sequence[str], qrels: Mapping[str, float], k: int) -> float | None:
    """1 / rank of the first relevant product within the top k (0 if none); None with no relevant product."""
    rel = relevant(qrels)
    if not rel:
        return None
    return next((1.0 / rank for rank, pid in enumerate(ranked[:k], start=1) if pid in rel), 0.0)


def _dcg(gains: Iterable[float]) -> float:
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def ndcg_at(ranked: Sequence[str], qrels: Mapping[str, float], k: int) -> float | None:
    """DCG@k / ideal DCG@k with gain = grade - 1 (Järvelin & Kekäläinen 2002, linear gain);
    None when the ideal DCG is 0 (every judged product graded 1)."""
    ideal = _dcg(sorted((g - 1.0 for g in qrels.values()), reverse=True)[:k])
    if ideal <= 0.0:
        return None
    return _dcg(qrels.get(pid, 1.0) - 1.0 for pid in ranked[:k]) / ideal


def hit_at(ranked: Sequence[str], target: str, k: int) -> float:
    """1 if ``target`` is in the top k, else 0."""
    return float(target in ranked[:k])


def reciprocal_rank_at(ranked: Sequence[str], target: str, k: int) -> float:
    """1 / rank of ``target`` within the top k, else 0."""
    return next((1.0 / rank for rank, pid in enumerate(ranked[:k], start=1) if pid == target), 0.0)


@dataclass
class MetricMeans:
    """Running means of per-query metric values that skip undefined (None) values; ``counts`` per metric."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, value: float | None) -> None:
        """Accumulate one query's value of ``name`` (None is skipped)."""
        if value is not None:
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def mean(self, name: str) -> float:
        """Mean of ``name`` over the queries it was defined on (0.0 when none)."""
        return self.sums.get(name, 0.0) / self.counts[name] if self.counts.get(name) else 0.0


def evaluate_rankings(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, float]],
                      curve_max_k: int = 100) -> dict:
    """Issue #3's metrics over queries: ``rankings`` query -> ranked product ids, ``qrels`` query ->
    {product_id: grade}. Returns recall@10, recall@100, ndcg@10, mrr@10, queries (judged queries
    evaluated), and recall_curve (mean Recall@K for K = 1..curve_max_k)."""
    means = MetricMeans()
    curve = np.zeros(curve_max_k)
    for query, judged in qrels.items():
        ranked = rankings.get(query, [])
        means.add("recall@10", recall_at(ranked, judged, 10))
        means.add("recall@100", recall_at(ranked, judged, 100))
        means.add("ndcg@10", ndcg_at(ranked, judged, 10))
        means.add("mrr@10", mrr_at(ranked, judged, 10))
        rel = relevant(judged)
        if rel:  # Recall@K for every K at once: cumulative hits over the ranked list
            hits = np.array([pid in rel for pid in ranked[:curve_max_k]], dtype=float)
            curve += np.pad(np.cumsum(hits), (0, curve_max_k - len(hits)), mode="edge" if len(hits) else
                            "constant") / len(rel)
    with_relevant = means.counts.get("recall@10", 0)
    return {"recall@10": means.mean("recall@10"), "recall@100": means.mean("recall@100"),
            "ndcg@10": means.mean("ndcg@10"), "mrr@10": means.mean("mrr@10"), "queries": len(qrels),
            "recall_curve": (curve / max(with_relevant, 1)).tolist()}


def scalar_metrics(metrics: Mapping) -> dict:
    """``metrics`` without its list-valued entries (the recall curve): what manifests and tables keep."""
    return {k: v for k, v in metrics.items() if not isinstance(v, list)}


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """(R, k) column indices of the k highest scores of each row of ``scores`` (R, C), best first."""
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def exact_top_k(queries: np.ndarray, products: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """(Q, k) indices of the k highest inner products per query row, best first (brute force)."""
    out = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        out[start:start + chunk] = top_k_rows(queries[start:start + chunk] @ products.T, k)
    return out
