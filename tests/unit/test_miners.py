"""Negative miners: exclusion of judged-relevant products, level mixes, the curriculum."""

import numpy as np
import pytest

from trainer.miners import ANCEMiner, BM25Miner, RandomMiner, TBHNSMiner
from trainer.miners.base import take_allowed
from trainer.taxonomy import CategoryTree

PATHS = [["A", "x", "1"], ["A", "x", "1"], ["A", "x", "2"], ["A", "x", "2"], ["A", "y", "3"], ["A", "y", "3"],
         ["B", "z", "4"], ["B", "z", "4"]]


def test_take_allowed_skips_excluded_and_repeats_then_tops_up():
    rng = np.random.default_rng(0)
    picked = take_allowed([3, 3, 1, 2], excluded={1}, k=4, rng=rng, n_products=10)
    assert picked[:2] == [3, 2] and len(set(picked)) == 4 and 1 not in picked


def test_take_allowed_refuses_impossible_requests():
    with pytest.raises(ValueError, match="too small"):
        take_allowed([], excluded={0, 1}, k=2, rng=np.random.default_rng(0), n_products=3)


@pytest.mark.parametrize("make", [
    lambda: RandomMiner(8, seed=1),
    lambda: BM25Miner(np.array([[0, 1, 2, 3, 4, 5]]), 8, seed=1),
    lambda: _ance(),
    lambda: TBHNSMiner(CategoryTree(PATHS), seed=1),
])
def test_every_miner_never_returns_an_excluded_product(make):
    miner = make()
    for step in range(50):
        negatives = miner.mine(0, 0, {0, 1, 2}, 3, step)
        assert len(negatives) == 3 and len(set(negatives)) == 3
        assert not {0, 1, 2} & set(negatives)


def _ance():
    miner = ANCEMiner(8, seed=1)
    miner.refresh(np.array([[7, 6, 5, 4, 3]]))
    return miner


def test_ance_needs_a_refresh():
    with pytest.raises(RuntimeError, match="refresh"):
        ANCEMiner(8).mine(0, 0, {0}, 2, 0)


def test_tbhns_hard_mix_draws_from_the_requested_levels():
    tree = CategoryTree(PATHS)
    siblings_only = TBHNSMiner(tree, hard={"sibling": 1.0}, seed=0)
    drawn = {n for step in range(30) for n in siblings_only.mine(0, 0, {0}, 2, step)}
    assert drawn <= {2, 3}  # product 0's sibling leaf "A > x > 2"
    other = TBHNSMiner(tree, hard={"other_department": 1.0}, seed=0)
    assert {n for step in range(30) for n in other.mine(0, 0, {0}, 2, step)} <= {6, 7}


def test_tbhns_curriculum_moves_from_easy_to_hard():
    miner = TBHNSMiner(CategoryTree(PATHS), hard={"sibling": 1.0}, easy={"other_department": 1.0},
                       curriculum_steps=100)
    levels = ("same_leaf", "sibling", "cousin", "other_department")
    assert dict(zip(levels, miner.mix(0))) == {"same_leaf": 0, "sibling": 0, "cousin": 0, "other_department": 1}
    assert miner.mix(50)[1] == pytest.approx(0.5)
    assert miner.mix(1000)[1] == pytest.approx(1.0)


def test_tbhns_rejects_unknown_levels():
    with pytest.raises(ValueError, match="unknown taxonomy levels"):
        TBHNSMiner(CategoryTree(PATHS), hard={"nephew": 1.0})
