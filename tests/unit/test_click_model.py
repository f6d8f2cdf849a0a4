"""The shopper simulator's position-based click model (cartwise/app/simulation/click_model.py): examination,
attractiveness, cart probability and the actions drawn from them."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cartwise.app.simulation.click_model import (
    Actions,
    ClickParams,
    Shown,
    act,
    attractiveness,
    cart_probability,
    examination,
)

grades = st.floats(min_value=1.0, max_value=3.0)
affinities = st.floats(min_value=0.0, max_value=1.0)
pages = st.lists(st.builds(Shown, st.one_of(st.none(), grades), affinities, st.booleans()), max_size=20)


def test_examination_is_one_over_rank_to_the_eta():
    assert examination(1) == 1.0
    assert examination(4) == pytest.approx(0.25)
    assert examination(4, ClickParams(eta=2.0)) == pytest.approx(1 / 16)
    with pytest.raises(ValueError):
        examination(0)


@given(st.integers(min_value=1, max_value=999), st.floats(min_value=0.0, max_value=3.0))
def test_examination_never_rises_with_rank(rank, eta):
    params = ClickParams(eta=eta)
    assert 0.0 < examination(rank + 1, params) <= examination(rank, params) <= 1.0


def test_attractiveness_end_points_and_unjudged():
    assert attractiveness(1.0) == pytest.approx(0.05)
    assert attractiveness(2.0) == pytest.approx(0.50)
    assert attractiveness(3.0) == pytest.approx(0.95)
    assert attractiveness(None) == pytest.approx(0.10)  # unknown, not irrelevant
    assert attractiveness(1.0) < attractiveness(None) < attractiveness(2.0)


@given(grades, grades, affinities)
def test_attractiveness_rises_with_grade(low, high, affinity):
    low, high = sorted((low, high))
    assert attractiveness(low, affinity) <= attractiveness(high, affinity)


@given(st.one_of(st.none(), grades), affinities, affinities)
def test_affinity_tilts_attractiveness_up_within_bounds(grade, a, b):
    a, b = sorted((a, b))
    assert 0.0 < attractiveness(grade, a) <= attractiveness(grade, b) <= 1.0
    assert attractiveness(grade, 1.0) == pytest.approx(min(1.0, 2 * attractiveness(grade, 0.0)))


def test_cart_probability_follows_the_grade():
    assert cart_probability(1.0) == 0.0
    assert cart_probability(3.0) == pytest.approx(0.10)
    assert cart_probability(None) == pytest.approx(0.01)


@given(pages, st.integers(min_value=0, max_value=2**32))
def test_actions_are_nested_ranks_on_the_page(page, seed):
    actions = act(page, random.Random(seed))
    assert set(actions.purchases) <= set(actions.carts) <= set(actions.views) <= set(range(1, len(page) + 1))
    assert list(actions.views) == sorted(actions.views)
    assert not any(page[rank - 1].bought_before for rank in actions.carts)


@given(pages, st.integers(min_value=0, max_value=2**32))
def test_the_same_stream_draws_the_same_actions(page, seed):
    assert act(page, random.Random(seed)) == act(page, random.Random(seed))


def test_nothing_is_viewed_without_attraction_and_everything_with_full_attraction():
    page = [Shown(3.0)] * 5
    never = ClickParams(attract_perfect=0.0, attract_irrelevant=0.0)
    assert act(page, random.Random(0), never) == Actions((), (), ())
    always = ClickParams(eta=0.0, attract_perfect=1.0, cart_perfect=1.0, purchase_given_cart=1.0)
    assert act(page, random.Random(0), always) == Actions((1, 2, 3, 4, 5), (1, 2, 3, 4, 5), (1, 2, 3, 4, 5))


def test_view_rates_follow_the_model():
    """Over many pages, rank r's view rate is (1/r)·α and a perfect product is carted at P(cart | view)."""
    rng, page, n = random.Random(7), [Shown(3.0), Shown(3.0), Shown(None), Shown(1.0)], 20_000
    views, carts = [0] * 4, 0
    for _ in range(n):
        actions = act(page, rng)
        for rank in actions.views:
            views[rank - 1] += 1
        carts += 1 in actions.carts
    expected = [0.95, 0.95 / 2, 0.10 / 3, 0.05 / 4]
    for seen, p in zip(views, expected):
        assert seen / n == pytest.approx(p, abs=4 * (p * (1 - p) / n) ** 0.5 + 1e-3)
    assert carts / views[0] == pytest.approx(0.10, abs=0.015)
