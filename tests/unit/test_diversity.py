"""Collapsing identical-text products (cartwise/diversity.py)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cartwise.diversity import OVERFETCH, collapse_identical, fetch_limit


def vec(k: int) -> np.ndarray:
    v = np.zeros(4, dtype=np.float32)
    v[k % 4] = 1.0 + k // 4
    return v


def test_keeps_the_best_ranked_of_each_vector_in_order():
    hits = ["a", "a-copy", "b", "a-copy-2", "c"]
    vectors = [vec(0), vec(0), vec(1), vec(0), vec(2)]
    assert collapse_identical(hits, vectors, 10) == ["a", "b", "c"]


def test_stops_at_the_limit_and_keeps_hits_without_vectors():
    assert collapse_identical(["x", "a", "b", "c"], [None, vec(0), vec(1), vec(2)], 2) == ["x", "a"]


def test_seen_vectors_are_left_out():
    assert collapse_identical(["a", "b"], [vec(0), vec(1)], 10, seen=[vec(0)]) == ["b"]


def test_nearly_equal_vectors_are_different_products():
    almost = vec(0) + np.float32(1e-7)
    assert collapse_identical(["a", "b"], [vec(0), almost], 10) == ["a", "b"]


def test_fetch_limit_overfetches_only_when_collapsing():
    assert fetch_limit(10, collapse=False) == 10
    assert fetch_limit(10, collapse=True) == 10 * OVERFETCH
    assert fetch_limit(900, collapse=True) == 1000


@given(st.lists(st.integers(0, 5), max_size=40), st.integers(1, 20))
def test_result_is_a_prefix_of_the_distinct_vectors(keys, limit):
    hits = list(range(len(keys)))
    kept = collapse_identical(hits, [vec(k) for k in keys], limit)
    first = {}
    for hit, k in zip(hits, keys):
        first.setdefault(k, hit)
    assert kept == sorted(first.values())[:limit]
