"""BM25 scores for training-time validation equal what the real engine serves, and the hybrid validator
fuses them with the dense scores as the served ranking does."""

import uuid

import numpy as np
import pytest

from cartwise.index import CollectionSchema, EdgeIndex, IndexPoint
from cartwise.lexical import LexicalEncoder
from cartwise.settings import Lexical
from trainer.data import LabeledQuery
from trainer.lexical_scores import LexicalScores
from trainer.validation import Validator

TEXTS = ["Acme phone with cordless charger", "Globex phone case", "Acme laptop charger 2 in. x 4 in.",
         "Initech kitchen knife", "Acme coffee mug", "phone", "Globex home lamp", "Initech desk lamp with charger"]
QUERIES = ["acme charger", "lamp", "2 in phone", "the of", "zebra"]


def test_scores_equal_the_engines_bm25(tmp_path):
    params = Lexical()
    encoder, scores = LexicalEncoder(params), LexicalScores(params, TEXTS)
    index = EdgeIndex(tmp_path)
    index.create_collection("p", 2, CollectionSchema(lexical=True))
    index.upsert("p", [IndexPoint(str(uuid.UUID(int=k + 1)), np.array([1, 0], dtype=np.float32), {"k": k},
                                  encoder.document(t)) for k, t in enumerate(TEXTS)])
    ours = scores.scores(QUERIES, np.arange(len(TEXTS)))
    for row, query in zip(ours, QUERIES):
        served = {h.payload["k"]: h.score for h in index.lexical_search("p", encoder.query(query), len(TEXTS))}
        np.testing.assert_allclose(row, [served.get(k, 0.0) for k in range(len(TEXTS))], atol=1e-4)
    np.testing.assert_array_equal(scores.scores(["lamp"], np.array([7, 6]))[0], ours[1, [7, 6]])
    index.close()


class FixedEncoder:
    """Stands in for trainer.encoding.TextEncoder: fixed catalog and query vectors."""

    def __init__(self, catalog: np.ndarray, queries: dict[str, np.ndarray]) -> None:
        self._catalog, self._queries = catalog, queries

    def catalog(self, rows: np.ndarray) -> np.ndarray:
        return self._catalog[rows]

    def query_matrix(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._queries[t] for t in texts])


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_hybrid_validator_ranks_by_the_served_fusion(weight):
    rng = np.random.default_rng(0)
    catalog = rng.normal(size=(len(TEXTS), 4)).astype(np.float32)
    queries = {q: rng.normal(size=4).astype(np.float32) for q in QUERIES[:3]}
    judged = [LabeledQuery(q, {k: 3.0}) for k, q in enumerate(queries)]
    params = Lexical(weight=weight)
    validator = Validator(judged, np.arange(len(TEXTS))).hybrid(LexicalScores(params, TEXTS))
    encoder = FixedEncoder(catalog, queries)
    bm25 = LexicalScores(params, TEXTS).scores(list(queries), np.arange(len(TEXTS)))
    fused = (1 - weight) * np.stack(list(queries.values())) @ catalog.T + weight * params.scale * bm25
    metrics = validator.run(encoder)  # ranks the top len(TEXTS) - 1 of the corpus
    ranks = [list(np.argsort(-row, kind="stable")).index(k) for k, row in enumerate(fused)]
    expected_mrr = np.mean([1 / (1 + r) if r < len(TEXTS) - 1 else 0.0 for r in ranks])
    assert metrics["mrr@10"] == pytest.approx(expected_mrr)


def test_with_dense_reports_the_encoder_alone_from_the_same_vectors():
    rng = np.random.default_rng(1)
    catalog = rng.normal(size=(len(TEXTS), 4)).astype(np.float32)
    queries = {q: rng.normal(size=4).astype(np.float32) for q in QUERIES[:3]}
    judged = [LabeledQuery(q, {k: 3.0}) for k, q in enumerate(queries)]
    encoder = FixedEncoder(catalog, queries)
    hybrid = Validator(judged, np.arange(len(TEXTS))).hybrid(LexicalScores(Lexical(weight=0.7), TEXTS))
    metrics = hybrid.run(encoder, with_dense=True)
    assert metrics["dense"] == {k: v for k, v in Validator(judged, np.arange(len(TEXTS))).run(encoder).items()
                                if k != "recall_curve"}
    assert metrics["ndcg@10"] != metrics["dense"]["ndcg@10"]


def test_term_coverage_counts_the_query_terms_a_product_has():
    scores = LexicalScores(Lexical(), TEXTS)
    plain, weighted = scores.term_coverage("acme chargers zebra", np.array([0, 1, 2, 4, 5]))
    # "acme" and "charger" (stemmed) are in products 0 and 2; "zebra" is in none; product 4 has "acme" only
    np.testing.assert_allclose(plain, [2 / 3, 0, 2 / 3, 1 / 3, 0])
    # IDF-weighted over the terms some product has: acme (3 products) is commoner than charger (3) -> equal
    assert weighted[0] == pytest.approx(1.0) and weighted[2] == pytest.approx(1.0)
    assert 0 < weighted[3] < 1 and weighted[1] == 0
    empty = scores.term_coverage("the of", np.array([0, 1]))
    np.testing.assert_array_equal(empty[0], [0, 0])
    np.testing.assert_array_equal(scores.document_terms(np.array([5, 0])), [1, 4])
