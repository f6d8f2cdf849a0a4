"""The ranking profile (cartwise/ranking.py): the fusion formula, its inverse, the fetch depths, and the
backends' engine queries translated from it."""

import numpy as np
import pytest
from qdrant_client import models

from cartwise.index import HybridQuery, SparseVector
from cartwise.index.server import hybrid_prefetch
from cartwise.ranking import (
    FETCH,
    RankingProfile,
    fuse,
    fusion_coefficients,
    lexical_part,
    prefetch_depth,
)
from cartwise.settings import Lexical


def test_the_fetch_depths():
    assert (FETCH.most, FETCH.candidate_set) == (1000, 200)


def test_the_profile_is_the_settings():
    lexical = Lexical(weight=0.3, scale=0.2, k1=1.2, b=0.75, avg_doc_len=9.0, candidates=50)
    profile = RankingProfile.from_settings(lexical)
    assert profile == RankingProfile(0.3, 0.2, 1.2, 0.75, 9.0, 50, FETCH)
    with pytest.raises(AttributeError):
        profile.lexical_weight = 0.5  # frozen: one profile per service


def test_the_fusion_is_a_convex_mix_with_bm25_scaled():
    dense, bm25 = np.array([[0.5, -0.2], [0.1, 0.9]]), np.array([[3.0, 0.0], [1.5, 7.0]])
    assert fusion_coefficients(0.4, 0.15) == pytest.approx((0.06, 0.6))
    np.testing.assert_array_equal(fuse(dense, bm25, 0.4, 0.15), (1 - 0.4) * dense + 0.4 * 0.15 * bm25)
    assert fuse(0.5, 3.0, 0.0, 0.15) == 0.5
    assert fuse(0.5, 3.0, 1.0, 0.15) == pytest.approx(0.45)


@pytest.mark.parametrize("w", [0.1, 0.5, 0.9, 1.0])
def test_the_lexical_part_inverts_the_fusion(w):
    assert lexical_part(fuse(0.3, 4.2, w, 0.15), 0.3, w, 0.15) == pytest.approx(4.2)


def test_the_lexical_part_is_zero_without_a_lexical_side_and_never_negative():
    assert lexical_part(0.3, 0.5, 0.0, 0.15) == 0.0
    assert lexical_part(fuse(0.3, 0.0, 0.5, 0.15) - 1e-9, 0.3, 0.5, 0.15) == 0.0


def test_a_hybrid_query_reads_the_profile_formula():
    dense = np.array([0.6, 0.8], dtype=np.float32)
    query = HybridQuery(dense, SparseVector((1,), (1.0,)), 0.4, 0.15, candidates=100)
    assert query.coefficients() == fusion_coefficients(0.4, 0.15)
    assert query.depth(10) == prefetch_depth(100, 10) == 100 and query.depth(300) == 300
    vector = np.array([1.0, 0.0], dtype=np.float32)
    assert query.lexical_of(fuse(0.6, 2.0, 0.4, 0.15), vector) == pytest.approx(2.0)


def test_the_server_query_is_the_profile_translated():
    query = HybridQuery(np.array([0.6, 0.8], dtype=np.float32), SparseVector((1,), (1.0,)), 0.4, 0.15, candidates=7)
    rescored, formula = hybrid_prefetch(query, 5, None, None)
    (union,) = rescored[0].prefetch
    assert [side.limit for side in union.prefetch] == [query.depth(5)] * 2
    assert union.limit == rescored[0].limit == 2 * query.depth(5)
    factors = [term.mult[0] for term in formula.formula.sum]
    assert [term.mult[1] for term in formula.formula.sum] == ["$score[0]", "$score[1]"]
    assert tuple(factors) == query.coefficients()
    assert isinstance(formula, models.FormulaQuery)
