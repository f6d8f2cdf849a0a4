"""The second-stage experiment: candidate lists follow the served fusion, labels follow the metrics'
gain, and LambdaRank learns a signal the fusion misses (pure logic; real LightGBM)."""

import numpy as np

from cartwise.settings import Lexical
from trainer.data import LabeledQuery
from trainer.lexical_scores import LexicalScores
from trainer.second_stage import FEATURES, CandidateLists, candidate_lists, predict, train_ranker

TEXTS = ["Acme phone with cordless charger", "Globex phone case", "Acme laptop charger 2 in. x 4 in.",
         "Initech kitchen knife", "Acme coffee mug", "phone", "Globex home lamp", "Initech desk lamp with charger"]


def test_candidates_are_the_fused_top_k_with_their_scores():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(TEXTS), 4)).astype(np.float32)
    queries = [LabeledQuery("acme charger", {2: 3.0}), LabeledQuery("lamp", {6: 2.0, 7: 1.0})]
    qvecs = rng.normal(size=(2, 4)).astype(np.float32)
    lexical = LexicalScores(Lexical(weight=0.5), TEXTS)
    lists = candidate_lists(queries, qvecs, vectors, lexical, k=5, chunk=1)
    bm25 = lexical.scores([q.text for q in queries], np.arange(len(TEXTS)))
    fused = 0.5 * qvecs @ vectors.T + 0.5 * Lexical().scale * bm25
    for row, products, features in zip(fused, lists.products, lists.features):
        np.testing.assert_array_equal(products, np.argsort(-row, kind="stable")[:5])
        np.testing.assert_allclose(features[:, FEATURES.index("fused")], row[products], rtol=1e-5)
        assert sorted(features[:, FEATURES.index("dense_rank")]) == list(range(5))
        assert features[:, FEATURES.index("dense_gap")].max() == 0
    labels = CandidateLists(queries, np.array([[2, 0], [6, 7]]), lists.features[:, :2]).labels()
    np.testing.assert_array_equal(labels, [[6, 0], [3, 0]])  # round(3·(grade − 1)); unjudged 0


def test_lambdarank_learns_what_the_fused_order_misses():
    rng = np.random.default_rng(0)
    n_queries, n_candidates = 400, 20
    queries, products, features = [], [], []
    for q in range(n_queries):
        good = rng.random(n_candidates) < 0.15
        feats = rng.normal(size=(n_candidates, len(FEATURES))).astype(np.float32)
        feats[:, FEATURES.index("coverage")] += 2.0 * good  # the signal; the fused order is random
        ids = np.arange(q * n_candidates, (q + 1) * n_candidates)
        queries.append(LabeledQuery(f"q{q}", {int(i): 3.0 for i in ids[good]} | {int(ids[0]): 1.0}))
        products.append(ids), features.append(feats)
    lists = CandidateLists(queries, np.stack(products), np.stack(features))
    cut = slice(0, 300), slice(300, 350), slice(350, 400)
    train, early, held = (CandidateLists(queries[s], lists.products[s], lists.features[s]) for s in cut)
    booster = train_ranker(train, early)
    fused, reranked = held.metrics()["all"]["ndcg@10"], held.metrics(predict(booster, held))["all"]["ndcg@10"]
    assert reranked > fused + 0.3
