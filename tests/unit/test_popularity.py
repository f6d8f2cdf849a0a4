"""Popularity arithmetic (cartwise/popularity.py): decayed counts kept as log2 sums."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cartwise.index import IndexHit
from cartwise.popularity import SCORE_FIELD, combine, event_term, ranked, relative

H = 3600.0


def decayed(events, now):
    return sum(w * 2 ** (-(now - t) / H) for w, t in events)


@given(st.lists(st.tuples(st.floats(0.1, 5.0), st.floats(0, 10 * H)), min_size=1, max_size=20))
def test_the_stored_sum_is_the_decayed_count_at_any_time(events):
    score = None
    for w, t in events:
        score = combine(score, event_term(w, t, H))
    for now in (10 * H, 20 * H):
        assert 2 ** (score - now / H) == pytest.approx(decayed(events, now), rel=1e-9)


def test_partial_counts_of_a_product_add_up_and_order_the_products():
    def hit(product, score):
        return IndexHit("id", 0.0, {"product_id": product, SCORE_FIELD: score})

    old, new = event_term(1.0, 0.0, H), event_term(1.0, 2 * H, H)  # two half-lives apart
    result = ranked([hit("a", old), hit("b", new), hit("a", old)])
    assert [p for p, _ in result] == ["b", "a"]  # 2 older purchases weigh half of 1 newer
    assert result[1][1] == pytest.approx(old + 1.0) and relative(result[1][1], result[0][1]) == pytest.approx(0.5)


def test_an_event_weight_must_be_positive():
    with pytest.raises(ValueError):
        event_term(0.0, 0.0, H)
    assert event_term(2.0, H, H) == pytest.approx(1.0 + math.log2(2.0))
