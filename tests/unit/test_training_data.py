"""Query split, labelled queries and the batch layout the losses rely on."""

import numpy as np
import pytest

from trainer.batch import MINED_GRADE, build_batch
from trainer.config import TrainConfig
from trainer.data import LabeledQuery, labeled_queries, split_of, split_queries
from trainer.miners import RandomMiner


def test_split_is_stable_disjoint_and_near_the_fraction():
    queries = [f"query {i}" for i in range(5000)]
    assert [split_of(q) for q in queries] == [split_of(q) for q in queries]
    val = sum(split_of(q) == "val" for q in queries) / len(queries)
    assert 0.18 < val < 0.22
    assert split_of("Cordless Drill ") == split_of("cordless drill")  # case and padding do not move a query


def test_split_queries_partitions_by_text():
    queries = [LabeledQuery(f"q{i}", {i: 3.0}) for i in range(200)]
    train, val = split_queries(queries)
    assert {q.text for q in train}.isdisjoint({q.text for q in val})
    assert len(train) + len(val) == 200


def test_labeled_queries_map_ids_and_rank_positives():
    queries = labeled_queries({"drill": {"p1": 3.0, "p2": 2.67, "p3": 1.0, "zz": 3.0}}, {"p1": 0, "p2": 1, "p3": 2})
    (query,) = queries
    assert query.judged == {0: 3.0, 1: 2.67, 2: 1.0}
    assert query.positives(2.5) == [0, 1]
    assert query.excluded(2.0) == {0, 1}


def test_batch_columns_exclusions_and_graded_groups():
    config = TrainConfig(negatives="random", negatives_per_query=2, positive_grade=2.5, exclude_grade=2.0)
    a = LabeledQuery("drill", {0: 3.0, 1: 2.33, 2: 1.0})
    b = LabeledQuery("saw", {3: 3.0, 0: 2.0})
    batch = build_batch([(0, a), (1, b)], RandomMiner(50, seed=0), config, step=0, rng=np.random.default_rng(0))
    products = batch.products.tolist()
    assert products[batch.positive[0]] == 0 and products[batch.positive[1]] == 3
    # product 0 is judged 2.0 for "saw": never a negative there; product 1 (2.33) never for "drill"
    assert batch.excluded[1, products.index(0)] and batch.excluded[0, products.index(1)]
    assert not batch.excluded[0, products.index(2)]  # graded 1.0: a legitimate negative
    # drill's group: positive 3.0, then 2.33, then 1.0, then one mined negative, best first
    assert batch.grades[0].tolist() == pytest.approx([3.0, 2.33, 1.0, MINED_GRADE])
    assert [products[c] for c in batch.group[0, :3].tolist()] == [0, 1, 2]
    assert batch.group[1, -1] == -1 or batch.grades[1].tolist()[-1] == MINED_GRADE
