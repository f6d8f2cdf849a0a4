"""``cartwise experiments second-stage``: does a learned second stage beat the tuned fusion?

A LightGBM LambdaRank model (LambdaMART: Burges 2010, "From RankNet to LambdaRank to LambdaMART: An
Overview", §§4–7) re-orders the served hybrid ranking's top 100 of each query by features the served
query has or could cheaply get: the dense and BM25 scores and the fused one, each side's rank among the
candidates, query-term coverage of the product (plain and IDF-weighted, from the same BM25 terms), the
product's and the query's term counts, and each score relative to the query's best candidate.

Trained on the Home Depot train split's judgments (a candidate's label is its judged grade on a 0..6
scale, round(3·(grade − 1)), with the gain grade − 1 of the metrics; an unjudged candidate is 0, as the
metrics count it), early-stopped on a tenth of the train queries carved off by a fixed seed, and scored
on the validation split against the fused ranking it re-orders. Both rank the same candidates, so
Recall@100 cannot change: the question is the top of the list."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cartwise.ranking import fuse
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from encoders.runtime import query_encoder
from trainer.data import LabeledQuery, labeled_queries, split_queries, tuning_half
from trainer.evaluation.homedepot import (
    cached_catalog_vectors,
    catalog_texts,
    embed,
    lexical_texts,
    load_homedepot,
)
from trainer.evaluation.metrics import evaluate_rankings, scalar_metrics, top_k_rows
from trainer.lexical_scores import LexicalScores

log = logging.getLogger(__name__)

FEATURES = ("dense", "bm25", "fused", "dense_rank", "bm25_rank", "coverage", "idf_coverage", "document_terms",
            "query_terms", "dense_gap", "bm25_share")
CANDIDATES = 100
GRADE_STEPS = 3  # Home Depot grades are means of three raters: thirds between 1 and 3
EARLY_STOPPING_SHARE = 0.1


@dataclass
class CandidateLists:
    """Each query's candidates (the fused ranking's top C) and their features."""

    queries: list[LabeledQuery]
    products: np.ndarray  # (Q, C) int64 catalog indices, in fused order
    features: np.ndarray  # (Q, C, F) float32, columns as FEATURES

    def labels(self) -> np.ndarray:
        """(Q, C) int32 LambdaRank labels: round(3·(grade − 1)) for a judged candidate, 0 for an unjudged one."""
        return np.array([[round(GRADE_STEPS * (q.judged.get(int(p), 1.0) - 1.0)) for p in row]
                         for q, row in zip(self.queries, self.products)], dtype=np.int32)

    def metrics(self, scores: np.ndarray | None = None) -> dict:
        """Metrics of the candidates ordered by ``scores`` (Q, C) (None: the fused order), over the whole
        list and over the validation split's tune and check halves (trainer.data.tuning_half)."""
        order = np.arange(self.products.shape[1])[None, :].repeat(len(self.queries), 0) if scores is None \
            else np.argsort(-scores, axis=1, kind="stable")
        ranked = np.take_along_axis(self.products, order, axis=1)
        rankings = {q.text: [str(int(p)) for p in row] for q, row in zip(self.queries, ranked)}
        qrels = {q.text: {str(p): g for p, g in q.judged.items()} for q in self.queries}
        halves = {"all": qrels} | {h: {q: j for q, j in qrels.items() if tuning_half(q) == h} for h in ("tune", "check")}
        return {name: scalar_metrics(evaluate_rankings(rankings, part)) for name, part in halves.items()}


def candidate_lists(queries: list[LabeledQuery], qvecs: np.ndarray, vectors: np.ndarray, lexical: LexicalScores,
                    k: int = CANDIDATES, chunk: int = 256) -> CandidateLists:
    """The fused ranking's top ``k`` over the whole catalog for ``queries`` with query vectors ``qvecs``
    (Q, D) and catalog vectors ``vectors`` (N, D), fused with ``lexical``'s w and κ, with their features."""
    w, scale = lexical.params.weight, lexical.params.scale
    everything = np.arange(len(vectors))
    products, features = [], []
    for start in range(0, len(queries), chunk):
        part = queries[start:start + chunk]
        dense = qvecs[start:start + chunk] @ vectors.T
        bm25 = lexical.scores([q.text for q in part], everything)
        fused = fuse(dense, bm25, w, scale)
        top = top_k_rows(fused, k)
        products.append(top)
        features.append(np.stack([_features(lexical, q.text, row, d[row], b[row], f[row])
                                  for q, row, d, b, f in zip(part, top, dense, bm25, fused)]))
    return CandidateLists(queries, np.concatenate(products), np.concatenate(features))


def _features(lexical: LexicalScores, query: str, products: np.ndarray, dense: np.ndarray, bm25: np.ndarray,
              fused: np.ndarray) -> np.ndarray:
    """(C, F) float32 features of one query's candidates, columns as FEATURES."""
    coverage, idf_coverage = lexical.term_coverage(query, products)
    query_terms = np.full(len(products), len(lexical.encoder.query(query).indices), np.float32)
    return np.stack([dense, bm25, fused, _rank(dense), _rank(bm25), coverage, idf_coverage,
                     lexical.document_terms(products), query_terms, dense - dense.max(),
                     bm25 / bm25.max() if bm25.max() > 0 else np.zeros_like(bm25)], axis=1).astype(np.float32)


def _rank(scores: np.ndarray) -> np.ndarray:
    """0 for the highest score among the candidates, 1 for the next, ..."""
    ranks = np.empty(len(scores), dtype=np.float32)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
    return ranks


def train_ranker(train: CandidateLists, early: CandidateLists, seed: int = 0):
    """A LightGBM LambdaRank booster over ``train``'s candidate lists, early-stopped on ``early``'s nDCG@10.
    Label gain i/3 reproduces the metrics' linear gain grade − 1."""
    import lightgbm as lgb

    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10],
              "label_gain": [i / GRADE_STEPS for i in range(2 * GRADE_STEPS + 1)], "learning_rate": 0.05,
              "num_leaves": 31, "min_data_in_leaf": 50, "feature_fraction": 0.9, "num_threads": 2, "seed": seed,
              "verbose": -1}
    sets = [_dataset(lgb, lists) for lists in (train, early)]
    return lgb.train(params, sets[0], num_boost_round=1000, valid_sets=[sets[1]], valid_names=["early"],
                     callbacks=[lgb.early_stopping(50, verbose=False), lgb.log_evaluation(100)])


def _dataset(lgb, lists: CandidateLists):
    q, c, f = lists.features.shape
    return lgb.Dataset(lists.features.reshape(q * c, f), lists.labels().ravel(), group=[c] * q,
                       feature_name=list(FEATURES), free_raw_data=False)


def predict(booster, lists: CandidateLists) -> np.ndarray:
    """(Q, C) float32 second-stage scores of ``lists``' candidates."""
    q, c, f = lists.features.shape
    return booster.predict(lists.features.reshape(q * c, f), num_threads=1).reshape(q, c).astype(np.float32)


def run_second_stage(settings: Settings, version: str, seed: int = 0) -> dict:
    """Train and score the second stage over ``version``'s vectors (the ONNX export, as served) and the
    served BM25; returns the fused and re-ranked validation metrics, the booster's size and feature
    importances, and the cost of features + prediction per query (ms, one thread)."""
    data = load_homedepot()
    ids, texts = catalog_texts(data)
    train, val = split_queries(labeled_queries(data.qrels, {pid: i for i, pid in enumerate(ids)}))
    carved = np.random.default_rng(seed).permutation(len(train))[:round(EARLY_STOPPING_SHARE * len(train))]
    early = [train[i] for i in sorted(carved)]
    fit = [q for i, q in enumerate(train) if i not in set(carved.tolist())]

    registry = ModelRegistry(settings.models_dir)
    vectors = cached_catalog_vectors(registry, version, texts, settings.data_dir / "eval_cache")
    encoder = query_encoder(registry, version, threads=2)
    lexical = LexicalScores(settings.lexical, lexical_texts(data, ids))
    lists = {}
    for name, queries in (("fit", fit), ("early", early), ("val", val)):
        qvecs = embed(encoder, [q.text for q in queries], f"embedding {len(queries)} {name} queries")
        started = time.perf_counter()
        lists[name] = candidate_lists(queries, qvecs, vectors, lexical)
        log.info("%s: %d candidate lists in %.0f s", name, len(queries), time.perf_counter() - started)
    booster = train_ranker(lists["fit"], lists["early"], seed)
    return {"version": version, "queries": {name: len(v.queries) for name, v in lists.items()},
            "fused": lists["val"].metrics(), "reranked": lists["val"].metrics(predict(booster, lists["val"])),
            "trees": booster.num_trees(),
            "importance": dict(zip(FEATURES, booster.feature_importance("gain").tolist())),
            "ms_per_query": _cost_ms(booster, lists["val"], lexical)}


def _cost_ms(booster, lists: CandidateLists, lexical: LexicalScores, sample: int = 200) -> dict:
    """Per-query cost of what serving would add: features of 100 candidates from their scores, and the
    booster's prediction (ms, median over ``sample`` validation queries, one thread)."""
    feature_ms, predict_ms = [], []
    for q, products, rows in list(zip(lists.queries, lists.products, lists.features))[:sample]:
        started = time.perf_counter()
        _features(lexical, q.text, products, rows[:, 0], rows[:, 1], rows[:, 2])
        feature_ms.append(1e3 * (time.perf_counter() - started))
        started = time.perf_counter()
        booster.predict(rows, num_threads=1)
        predict_ms.append(1e3 * (time.perf_counter() - started))
    return {"features": float(np.median(feature_ms)), "predict": float(np.median(predict_ms))}


def write_second_stage_report(results: dict, docs: Path) -> Path:
    """``docs/second_stage.md``: fused vs re-ranked on the validation split and its halves, importances."""
    from trainer.evaluation.report import markdown_table
    from trainer.report import FINDINGS, kept_findings

    metrics = ("ndcg@10", "recall@10", "mrr@10", "recall@100")
    rows = [[f"{name} ({part})", *(results[name][part][m] for m in metrics), results[name][part]["queries"]]
            for part in ("all", "tune", "check") for name in ("fused", "reranked")]
    importance = sorted(results["importance"].items(), key=lambda kv: -kv[1])
    total = sum(v for _, v in importance) or 1.0
    cost = results["ms_per_query"]
    text = f"""# A learned second stage over the hybrid ranking (Home Depot)

Generated by `cartwise experiments second-stage --model {results['version']}`: LightGBM LambdaRank
re-ordering the served fusion's top {CANDIDATES} (trainer/second_stage.py has the method and features).
Trained on {results['queries']['fit']} train-split queries, early-stopped on {results['queries']['early']}
others carved from the train split ({results['trees']} trees kept), scored on the
{results['queries']['val']} validation queries, which chose nothing.

{markdown_table(["ranking (validation part)", "nDCG@10", "Recall@10", "MRR@10", "Recall@100", "queries"], rows)}

Feature importance (share of the total split gain):
{chr(10).join(f"- {name}: {gain / total:.1%}" for name, gain in importance)}

Cost it would add per query on this machine (median, one thread): features {cost['features']:.2f} ms,
prediction {cost['predict']:.2f} ms.

{FINDINGS}
"""
    docs.mkdir(parents=True, exist_ok=True)
    path = docs / "second_stage.md"
    path.write_text(text.replace(FINDINGS, kept_findings(path)))
    return path
