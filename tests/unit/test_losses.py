"""The training losses against hand-computed values on tiny cases."""

import math

import pytest
import torch

from trainer.losses import false_negative_mask, masked_infonce, mmse_loss, roar_loss


def test_mask_drops_exactly_the_candidates_above_positive_plus_delta():
    scores = torch.tensor([[0.50, 0.59, 0.61, 0.80, 0.10]])
    keep = false_negative_mask(scores, torch.tensor([0]), delta=0.1)
    assert keep.tolist() == [[True, True, False, False, True]]  # 0.61 and 0.80 exceed 0.50 + 0.1


def test_no_delta_keeps_everything():
    scores = torch.tensor([[0.1, 0.9]])
    assert false_negative_mask(scores, torch.tensor([0]), None).all()


def test_infonce_matches_hand_computation_with_mask_and_exclusion():
    scores = torch.tensor([[0.5, 0.2, 0.7, 0.4], [0.1, 0.6, 0.3, 0.65]])
    positive = torch.tensor([0, 1])
    excluded = torch.tensor([[False, False, False, True], [False, False, False, False]])
    tau, delta = 0.5, 0.1
    # query 0: 0.7 > 0.5 + 0.1 is masked, column 3 is judged relevant -> denominator {0.5, 0.2}
    l0 = -math.log(math.exp(0.5 / tau) / (math.exp(0.5 / tau) + math.exp(0.2 / tau)))
    # query 1: 0.65 <= 0.6 + 0.1 stays -> denominator {0.1, 0.6, 0.3, 0.65}
    l1 = -math.log(math.exp(0.6 / tau) / sum(math.exp(s / tau) for s in (0.1, 0.6, 0.3, 0.65)))
    loss = masked_infonce(scores, positive, excluded, temperature=tau, delta=delta)
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_infonce_without_mask_is_cross_entropy():
    scores = torch.randn(4, 9)
    positive = torch.tensor([0, 3, 5, 8])
    expected = torch.nn.functional.cross_entropy(scores / 0.05, positive)
    assert masked_infonce(scores, positive, None, 0.05, None).item() == pytest.approx(expected.item(), rel=1e-6)


def test_infonce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="positive"):
        masked_infonce(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


def _log_odds(row: list[float], j: int, tau: float) -> float:
    z = [math.exp(s / tau) for s in row]
    p = z[j] / sum(z)
    return math.log(p / (1 - p))


def test_roar_equals_its_formula_on_a_three_grade_group():
    row = [0.9, 0.5, 0.7, 0.1]
    scores = torch.tensor([row])
    group = torch.tensor([[2, 1, 3]])  # grades 3 > 2 > 1 on columns 2, 1, 3
    grades = torch.tensor([[3.0, 2.0, 1.0]])
    tau = 0.5
    d1 = _log_odds(row, 2, tau) - _log_odds(row, 1, tau)
    d2 = _log_odds(row, 1, tau) - _log_odds(row, 3, tau)
    expected = -(math.log(1 / (1 + math.exp(-d1))) + math.log(1 / (1 + math.exp(-d2)))) / 2
    assert roar_loss(scores, group, grades, tau).item() == pytest.approx(expected, rel=1e-5)


def test_roar_skips_ties_and_padding():
    scores = torch.tensor([[0.2, 0.4, 0.6]])
    group = torch.tensor([[0, 1, -1]])
    grades = torch.tensor([[2.0, 2.0, 0.0]])  # a tie and a pad: no pair at all
    loss = roar_loss(scores.requires_grad_(), group, grades, 0.1)
    assert loss.item() == 0.0
    loss.backward()  # still differentiable


def test_mmse_is_global_plus_weighted_local():
    scores = torch.tensor([[0.8, 0.3, 0.5], [0.2, 0.7, 0.1]])
    positive = torch.tensor([0, 1])
    group, stages = torch.tensor([[0, 2], [1, 0]]), torch.tensor([[4.0, 2.0], [3.0, 0.0]])
    expected = masked_infonce(scores, positive, None, 0.05, None) + 0.5 * roar_loss(scores, group, stages, 0.01)
    assert mmse_loss(scores, positive, group, stages, local_weight=0.5).item() == pytest.approx(expected.item())
