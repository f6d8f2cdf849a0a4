"""Hand-computed cases for trainer.evaluation.metrics (issue #3 conventions: relevant at grade >= 2.5,
linear nDCG gain grade - 1, unjudged products gain 0, undefined metrics are None and skipped)."""

from __future__ import annotations

import math

import pytest

from trainer.evaluation.metrics import (
    RELEVANT_AT,
    MetricMeans,
    evaluate_rankings,
    hit_at,
    mrr_at,
    ndcg_at,
    recall_at,
    reciprocal_rank_at,
    relevant,
)

# a, b relevant (3 and 2.67 >= 2.5); c partially relevant (2); d irrelevant (1)
QRELS = {"a": 3.0, "b": 2.67, "c": 2.0, "d": 1.0}


# --- relevant / recall_at ------------------------------------------------------------------------------


def test_relevant_threshold():
    assert RELEVANT_AT == 2.5
    assert relevant({"x": 2.5, "y": 2.33, "z": 3.0, "w": 1.0}) == {"x", "z"}


def test_recall_partial():
    # relevant = {a, b}; only a is ranked
    assert recall_at(["c", "a", "d", "x"], QRELS, 10) == pytest.approx(1 / 2)


def test_recall_k_cuts_off_relevant_item():
    ranked = ["c", "a", "d", "b"]
    assert recall_at(ranked, QRELS, 3) == pytest.approx(1 / 2)  # b is at rank 4
    assert recall_at(ranked, QRELS, 4) == pytest.approx(1.0)
    assert recall_at(ranked, QRELS, 1) == 0.0


def test_recall_grade_exactly_2_5_is_relevant():
    assert recall_at(["x"], {"x": 2.5}, 10) == 1.0
    assert recall_at(["x"], {"x": 2.5, "y": 3.0}, 10) == pytest.approx(1 / 2)


def test_recall_grade_2_33_is_not_relevant():
    assert recall_at(["x"], {"x": 2.33}, 10) is None  # the query has no relevant product at all
    assert recall_at(["x"], {"x": 2.33, "y": 3.0}, 10) == 0.0  # x ranked but does not count


def test_recall_no_relevant_product_is_none():
    assert recall_at(["c", "d"], {"c": 2.0, "d": 1.0}, 10) is None
    assert recall_at([], {"c": 2.0}, 10) is None
    assert recall_at(["a"], {}, 10) is None


def test_recall_ranked_shorter_than_k():
    assert recall_at(["a"], QRELS, 100) == pytest.approx(1 / 2)
    assert recall_at(["b", "a"], QRELS, 100) == 1.0
    assert recall_at([], QRELS, 100) == 0.0


# --- mrr_at --------------------------------------------------------------------------------------------


def test_mrr_first_relevant_at_rank_3():
    assert mrr_at(["x", "c", "a", "b"], QRELS, 10) == pytest.approx(1 / 3)


def test_mrr_uses_first_relevant_only():
    assert mrr_at(["b", "a"], QRELS, 10) == 1.0
    assert mrr_at(["d", "b", "a"], QRELS, 10) == pytest.approx(1 / 2)


def test_mrr_none_in_top_k_is_zero():
    assert mrr_at(["x", "c", "a"], QRELS, 2) == 0.0
    assert mrr_at(["x", "c", "d"], QRELS, 10) == 0.0
    assert mrr_at([], QRELS, 10) == 0.0


def test_mrr_no_relevant_is_none():
    assert mrr_at(["c", "d"], {"c": 2.33, "d": 1.0}, 10) is None


# --- ndcg_at -------------------------------------------------------------------------------------------


def test_ndcg_worked_example():
    ranked = ["c", "x", "a", "d", "b"]  # x is unjudged
    # gains in ranked order: c=2-1=1, x=0, a=3-1=2, d=1-1=0, b=2.67-1=1.67
    # DCG  = 1/log2(2) + 0/log2(3) + 2/log2(4) + 0/log2(5) + 1.67/log2(6)
    #      = 1 + 0 + 1 + 0 + 1.67/2.585 = 2.6461...
    # IDCG over the judged gains sorted (2, 1.67, 1, 0):
    #      = 2/log2(2) + 1.67/log2(3) + 1/log2(4) + 0/log2(5)
    #      = 2 + 1.0537 + 0.5 + 0 = 3.5537...
    dcg = 1 / math.log2(2) + 0 / math.log2(3) + 2 / math.log2(4) + 0 / math.log2(5) + (2.67 - 1) / math.log2(6)
    idcg = 2 / math.log2(2) + (2.67 - 1) / math.log2(3) + 1 / math.log2(4) + 0 / math.log2(5)
    assert ndcg_at(ranked, QRELS, 5) == pytest.approx(dcg / idcg)
    assert ndcg_at(ranked, QRELS, 5) == pytest.approx(0.74462, abs=1e-4)
    # with k = 3: DCG = 1 + 0 + 2/log2(4) = 2; IDCG = 2 + 1.67/log2(3) + 1/log2(4)
    assert ndcg_at(ranked, QRELS, 3) == pytest.approx(
        (1 + 2 / math.log2(4)) / (2 + 1.67 / math.log2(3) + 1 / math.log2(4)))


def test_ndcg_tied_grades_swapped_give_same_value():
    qrels = {"a": 3.0, "b": 2.0, "c": 2.0}
    assert ndcg_at(["b", "a", "c"], qrels, 10) == pytest.approx(ndcg_at(["c", "a", "b"], qrels, 10))
    # DCG = 1/log2(2) + 2/log2(3) + 1/log2(4); IDCG = 2/log2(2) + 1/log2(3) + 1/log2(4)
    expected = (1 + 2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3) + 1 / math.log2(4))
    assert ndcg_at(["b", "a", "c"], qrels, 10) == pytest.approx(expected)


def test_ndcg_unjudged_products_gain_zero():
    qrels = {"a": 3.0}
    # DCG = 0/log2(2) + 2/log2(3); IDCG = 2/log2(2) = 2
    assert ndcg_at(["x", "a"], qrels, 10) == pytest.approx((2 / math.log2(3)) / 2)
    # an unjudged product counts exactly like a judged grade-1 product
    assert ndcg_at(["x", "a"], qrels, 10) == pytest.approx(ndcg_at(["d", "a"], {**qrels, "d": 1.0}, 10))
    assert ndcg_at(["x", "y", "z"], qrels, 10) == 0.0


def test_ndcg_all_grades_1_is_none():
    assert ndcg_at(["a", "b"], {"a": 1.0, "b": 1.0}, 10) is None
    assert ndcg_at([], {"a": 1.0}, 10) is None
    assert ndcg_at(["a"], {}, 10) is None


def test_ndcg_partially_relevant_only_is_defined():
    # no product reaches 2.5 but a grade-2 product has gain 1: nDCG is defined (unlike recall)
    qrels = {"e": 2.0, "f": 1.0}
    assert ndcg_at(["f", "e"], qrels, 10) == pytest.approx(1 / math.log2(3))
    assert recall_at(["f", "e"], qrels, 10) is None


def test_ndcg_perfect_ranking_is_one():
    assert ndcg_at(["a", "b", "c", "d"], QRELS, 10) == pytest.approx(1.0)
    assert ndcg_at(["a", "b", "c"], QRELS, 10) == pytest.approx(1.0)  # d has gain 0
    assert ndcg_at(["a", "b", "c", "x", "y"], QRELS, 10) == pytest.approx(1.0)
    assert ndcg_at(["a"], QRELS, 1) == pytest.approx(1.0)


def test_ndcg_ideal_uses_only_top_k_judged_gains():
    qrels = {"a": 3.0, "b": 3.0, "c": 3.0}
    # k = 1: IDCG = 2/log2(2) = 2 (not 2 + 2/log2(3) + 2/log2(4)), DCG = 2
    assert ndcg_at(["a"], qrels, 1) == pytest.approx(1.0)
    # k = 2: DCG = 2/log2(2) + 0/log2(3); IDCG = 2/log2(2) + 2/log2(3)
    assert ndcg_at(["a", "x"], qrels, 2) == pytest.approx(2 / (2 + 2 / math.log2(3)))
    # k = 2 with both slots relevant is perfect, though c is not retrieved
    assert ndcg_at(["b", "c"], qrels, 2) == pytest.approx(1.0)


# --- hit_at / reciprocal_rank_at -----------------------------------------------------------------------


def test_hit_at():
    ranked = ["a", "b", "c"]
    assert hit_at(ranked, "b", 2) == 1.0
    assert hit_at(ranked, "b", 1) == 0.0
    assert hit_at(ranked, "c", 10) == 1.0
    assert hit_at(ranked, "z", 10) == 0.0
    assert hit_at([], "a", 10) == 0.0


def test_reciprocal_rank_at():
    ranked = ["a", "b", "c"]
    assert reciprocal_rank_at(ranked, "a", 10) == 1.0
    assert reciprocal_rank_at(ranked, "c", 3) == pytest.approx(1 / 3)
    assert reciprocal_rank_at(ranked, "c", 2) == 0.0
    assert reciprocal_rank_at(ranked, "z", 10) == 0.0
    assert reciprocal_rank_at([], "a", 10) == 0.0


# --- MetricMeans ---------------------------------------------------------------------------------------


def test_metric_means_skips_none_and_counts_per_metric():
    means = MetricMeans()
    means.add("r", 1.0)
    means.add("r", None)
    means.add("r", 0.0)
    means.add("m", None)
    means.add("n", 0.25)
    assert means.mean("r") == pytest.approx(0.5)  # (1 + 0) / 2, the None skipped
    assert means.counts == {"r": 2, "n": 1}
    assert means.mean("n") == pytest.approx(0.25)
    assert means.mean("m") == 0.0  # only None seen: no count
    assert means.mean("never") == 0.0


# --- evaluate_rankings ---------------------------------------------------------------------------------


def test_evaluate_rankings_hand_arithmetic():
    qrels = {
        "q1": dict(QRELS),  # relevant {a, b}
        "q2": {"e": 2.0, "f": 1.0},  # no relevant product (nDCG still defined)
        "q3": {"g": 3.0},  # judged but not ranked at all
    }
    fillers = [f"x{i}" for i in range(47)]
    rankings = {
        "q1": ["c", "a", *fillers, "b"],  # a at rank 2, b at rank 50
        "q2": ["f", "e"],
        "other": ["a", "b"],  # a ranked query without judgments is ignored
    }
    assert rankings["q1"].index("b") + 1 == 50
    out = evaluate_rankings(rankings, qrels)

    # recall@10: q1 1/2, q3 0, q2 skipped -> (0.5 + 0) / 2
    assert out["recall@10"] == pytest.approx(0.25)
    # recall@100: q1 1, q3 0 -> 0.5
    assert out["recall@100"] == pytest.approx(0.5)
    # mrr@10: q1 1/2 (a at rank 2), q3 0 -> 0.25
    assert out["mrr@10"] == pytest.approx(0.25)
    # ndcg@10: q1 DCG = 1/log2(2) + 2/log2(3), IDCG = 2 + 1.67/log2(3) + 1/log2(4);
    #          q2 DCG = 0/log2(2) + 1/log2(3), IDCG = 1; q3 = 0 -> mean over 3 queries
    q1 = (1 + 2 / math.log2(3)) / (2 + (2.67 - 1) / math.log2(3) + 1 / math.log2(4))
    q2 = 1 / math.log2(3)
    assert out["ndcg@10"] == pytest.approx((q1 + q2 + 0.0) / 3)
    assert out["queries"] == 3

    curve = out["recall_curve"]
    assert len(curve) == 100
    assert all(later >= earlier for earlier, later in zip(curve, curve[1:]))
    assert curve[9] == pytest.approx(out["recall@10"])
    assert curve[99] == pytest.approx(out["recall@100"])
    # q1: 0 at K=1, 1/2 for K=2..49, 1 from K=50; q3: 0 -> halved by the two queries with a relevant product
    expected = [0.0] + [0.25] * 48 + [0.5] * 51
    assert curve == pytest.approx(expected)


def test_evaluate_rankings_curve_with_long_list_and_small_max_k():
    qrels = {"q": {"a": 3.0, "b": 3.0}}
    rankings = {"q": ["x", "a", "y", "z", "b", "w"]}
    out = evaluate_rankings(rankings, qrels, curve_max_k=4)
    assert out["recall_curve"] == pytest.approx([0.0, 0.5, 0.5, 0.5])


def test_evaluate_rankings_no_relevant_anywhere():
    out = evaluate_rankings({"q": ["a"]}, {"q": {"a": 1.0}})
    assert out["recall@10"] == 0.0 and out["mrr@10"] == 0.0 and out["ndcg@10"] == 0.0
    assert out["queries"] == 1
    assert out["recall_curve"] == [0.0] * 100
