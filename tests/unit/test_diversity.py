"""Collapsing identical-text products (cartwise/diversity.py)."""

from hypothesis import given
from hypothesis import strategies as st

from cartwise.catalog import text_digest
from cartwise.diversity import collapse_identical


def test_keeps_the_best_ranked_of_each_text_in_order():
    hits = ["a", "a-copy", "b", "a-copy-2", "c"]
    assert collapse_identical(hits, ["ka", "ka", "kb", "ka", "kc"], 10) == ["a", "b", "c"]


def test_stops_at_the_limit_and_keeps_hits_without_a_key():
    assert collapse_identical(["x", "a", "b", "c"], [None, "ka", "kb", "kc"], 2) == ["x", "a"]


def test_seen_texts_are_left_out():
    assert collapse_identical(["a", "b"], ["ka", "kb"], 10, seen=["ka"]) == ["b"]


def test_the_digest_is_of_the_exact_text():
    assert text_digest("Apple smartphone") == text_digest("Apple smartphone") != text_digest("Apple smartphone ")


@given(st.lists(st.integers(0, 5), max_size=40), st.integers(1, 20))
def test_result_is_a_prefix_of_the_first_of_each_key(keys, limit):
    hits = list(range(len(keys)))
    kept = collapse_identical(hits, [str(k) for k in keys], limit)
    first: dict[int, int] = {}
    for hit, k in zip(hits, keys):
        first.setdefault(k, hit)
    assert kept == sorted(first.values())[:limit]
