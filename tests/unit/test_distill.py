"""The distilled query tower's pure parts (trainer/distill.py): which teacher layers a student keeps, the
distillation loss, and the training texts."""

import math

import numpy as np
import pytest
import torch

from trainer.data import LabeledQuery
from trainer.distill import DistillConfig, distill_loss, student_layers, training_texts


def unit(rows) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_spread_keeps_the_first_and_last_teacher_layers():
    assert student_layers(6, 3, "spread") == [0, 2, 5]
    assert student_layers(6, 2, "spread") == [0, 5]
    assert student_layers(6, 3, "first") == [0, 1, 2]
    assert student_layers(6, 6, "spread") == list(range(6))


@pytest.mark.parametrize("layers", [0, 7])
def test_a_student_cannot_have_more_layers_than_its_teacher(layers):
    with pytest.raises(ValueError):
        student_layers(6, layers, "spread")


def test_alignment_is_one_minus_the_mean_cosine():
    student, teacher = unit([[1.0, 0.0], [0.0, 1.0]]), unit([[1.0, 0.0], [1.0, 1.0]])
    none = torch.zeros(2, dtype=torch.bool)
    loss = distill_loss(student, teacher, teacher, none, weight=1.0, temperature=0.05)
    assert loss.item() == pytest.approx((0.0 + (1 - math.sqrt(0.5))) / 2, abs=1e-6)
    assert distill_loss(teacher, teacher, teacher, none, 1.0, 0.05).item() == pytest.approx(0.0, abs=1e-6)


def test_the_contrastive_term_is_infonce_against_the_batch_products():
    student = teacher = unit([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    products = unit([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    positive = torch.ones(2, dtype=torch.bool)
    scores = student @ products.T / 0.1
    expected = torch.nn.functional.cross_entropy(scores, torch.arange(2)).item()
    assert distill_loss(student, teacher, products, positive, 0.5, 0.1).item() == pytest.approx(0.5 * expected, rel=1e-5)


def test_rows_without_a_positive_only_align():
    student, teacher = unit([[1.0, 0.0], [0.0, 1.0]]), unit([[1.0, 0.0], [0.0, 1.0]])
    products = unit([[0.0, 1.0], [1.0, 0.0]])  # would be a large InfoNCE loss if it counted
    only_first = torch.tensor([True, False])
    # row 1's product would outscore row 0's positive if it were a candidate; row 0 alone scores 0
    assert distill_loss(student, teacher, products, only_first, 1.0, 0.05).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(student, teacher, products, torch.ones(2, dtype=torch.bool), 1.0, 0.05).item() > 1.0


def test_a_shared_positive_is_not_a_negative():
    student = teacher = unit([[1.0, 0.2], [1.0, -0.2]])
    products = unit([[1.0, 0.0], [1.0, 0.0]])  # two rows with the same product (or identical texts)
    loss = distill_loss(student, teacher, products, torch.ones(2, dtype=torch.bool), 1.0, 0.05)
    alignment = distill_loss(student, teacher, products, torch.zeros(2, dtype=torch.bool), 1.0, 0.05)
    assert loss.item() == pytest.approx(alignment.item(), abs=1e-6)  # each row's only candidate is its positive


def test_shapes_must_agree():
    with pytest.raises(ValueError):
        distill_loss(unit([[1.0, 0.0]]), unit([[1.0, 0.0], [0.0, 1.0]]), unit([[1.0, 0.0]]),
                     torch.ones(1, dtype=torch.bool), 1.0, 0.05)


def test_training_texts_are_the_given_queries_and_short_title_prefixes():
    queries = [LabeledQuery("deck screws", {3: 3.0, 1: 2.0}), LabeledQuery("paint", {0: 1.5})]
    titles = [f"word{i} " + " ".join(f"w{j}" for j in range(10)) for i in range(20)]
    texts, positives = training_texts(queries, titles, DistillConfig(pseudo_queries=10, max_words=4))
    assert texts[:2] == ["deck screws", "paint"]
    assert positives[:2].tolist() == [3, -1]  # the best positive at >= 2.5; none for "paint"
    assert len(texts) == 12
    for text, product in zip(texts[2:], positives[2:]):
        assert 1 <= len(text.split()) <= 4 and titles[product].startswith(text)
    again, _ = training_texts(queries, titles, DistillConfig(pseudo_queries=10, max_words=4))
    assert again == texts and np.unique(positives[2:]).size == 10
