"""The simulator's queries (cartwise/app/simulation/queries.py): train split only, a Zipf head; and the shoppers'
tastes (shoppers.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cartwise.app.simulation.queries import QuerySampler, train_queries, zipf_weights
from cartwise.app.simulation.shoppers import (
    Shopper,
    Traits,
    leading_brands,
    make_shoppers,
)
from trainer.data import split_of

QUERIES = [f"query {i}" for i in range(400)]


def test_only_train_split_queries_are_kept():
    qrels = {q: {"p": 3.0} for q in QUERIES}
    kept = train_queries(qrels)
    assert kept and all(split_of(q) == "train" for q in kept)
    assert set(QUERIES) - set(kept) == {q for q in QUERIES if split_of(q) == "val"} != set()


@given(st.integers(min_value=1, max_value=500), st.floats(min_value=0.0, max_value=3.0))
def test_zipf_weights_are_a_decreasing_power_law(n, s):
    weights = zipf_weights(n, s)
    assert sum(weights) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(weights, weights[1:]))
    assert weights[0] / weights[-1] == pytest.approx(n ** s)


def test_zipf_weights_reject_bad_arguments():
    with pytest.raises(ValueError):
        zipf_weights(0)
    with pytest.raises(ValueError):
        zipf_weights(3, -1.0)
    with pytest.raises(ValueError):
        QuerySampler([], random.Random(0))


def test_draws_have_a_zipf_head():
    sampler, rng, n = QuerySampler(QUERIES, random.Random(1)), random.Random(2), 50_000
    counts = Counter(sampler.draw(rng) for _ in range(n))
    weights = zipf_weights(len(QUERIES))
    for k in (0, 1, 9):  # ranks 1, 2 and 10 of the shuffled order
        assert counts[sampler.ranked[k]] / n == pytest.approx(weights[k], rel=0.1)
    assert set(counts) <= set(QUERIES)


def test_the_head_depends_on_the_seed_only():
    assert QuerySampler(QUERIES, random.Random(3)).ranked == QuerySampler(QUERIES, random.Random(3)).ranked
    assert QuerySampler(QUERIES, random.Random(3)).ranked != QuerySampler(QUERIES, random.Random(4)).ranked


def test_shoppers_tastes_come_from_the_catalog_and_the_seed():
    traits = {f"p{i}": Traits(brand=f"b{i % 5}", category=f"c{i % 3}") for i in range(100)}
    shoppers = make_shoppers(20, traits, random.Random(5), prefix="s")
    assert [s.user_id for s in shoppers] == [f"s-{i}" for i in range(20)]
    for shopper in shoppers:
        assert 1 <= len(shopper.brands) <= 3 and 1 <= len(shopper.categories) <= 2
        assert set(shopper.brands) <= {f"b{i}" for i in range(5)}
        assert all(0.3 <= a <= 1.0 for a in [*shopper.brands.values(), *shopper.categories.values()])
    again = make_shoppers(20, traits, random.Random(5), prefix="s")
    assert [(s.brands, s.categories) for s in again] == [(s.brands, s.categories) for s in shoppers]


def test_affinity_is_the_larger_of_brand_and_category():
    shopper = Shopper("u", {"acme": 0.8}, {"tools": 0.4})
    assert shopper.affinity(Traits("acme", "tools")) == 0.8
    assert shopper.affinity(Traits("other", "tools")) == 0.4
    assert shopper.affinity(Traits(None, None)) == 0.0


def test_leading_brands_need_enough_titles_and_a_letter():
    titles = ["BEHR paint"] * 3 + ["1/2 in. pipe"] * 3 + ["Rare thing"]
    assert leading_brands(titles, 3) == Counter({"BEHR": 3})
