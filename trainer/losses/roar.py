"""ROAR: rank-order alignment over graded relevance (docs/architecture.md, "Stage 2"; the ROAR paper's alignment
loss, reported with β = 0.1 and τ_a = 0.01).

For query i, P(p_j | q_i) = softmax(S_i / τ_a)_j over the query's candidate row S_i; the odds are
P / (1 − P). For each pair of consecutive grades in the query's graded group (p⁺ graded strictly
above p⁻):

    Δ_{i,k} = log odds(p⁺_{i,k} | q_i) − log odds(p⁻_{i,k} | q_i)
    L_align = −(1/C) Σ_i Σ_k log σ(Δ_{i,k})        (C = number of pairs)

and the stage-2 objective is L_contrast + β · L_align.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def log_odds(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, M) log(P / (1 − P)) with P = softmax(scores / τ) per row, computed stably in log space."""
    log_p = F.log_softmax(scores / temperature, dim=1)
    log_not_p = torch.log1p(-log_p.exp().clamp(max=1.0 - 1e-6))
    return log_p - log_not_p


def roar_loss(scores: torch.Tensor, group: torch.Tensor, grades: torch.Tensor,
              temperature: float = 0.01) -> torch.Tensor:
    """Mean −log σ(Δ) over consecutive-grade pairs. ``scores`` (B, M) float; ``group`` (B, G) int64
    candidate columns of each query's graded group, sorted by grade descending, −1 for padding;
    ``grades`` (B, G) float, same layout. A pair (g, g+1) counts only when both are real and the
    grade strictly drops. Returns 0 (with a gradient path) when the batch has no pair.

    Raises ValueError when ``group`` and ``grades`` shapes differ."""
    if group.shape != grades.shape or group.shape[0] != scores.shape[0]:
        raise ValueError(f"group {tuple(group.shape)} and grades {tuple(grades.shape)} must be (B, G)")
    odds = log_odds(scores, temperature).gather(1, group.clamp(min=0))
    real = group >= 0
    pairs = real[:, :-1] & real[:, 1:] & (grades[:, :-1] > grades[:, 1:])
    if not pairs.any():
        return scores.sum() * 0.0
    delta = odds[:, :-1] - odds[:, 1:]
    return -F.logsigmoid(delta[pairs]).mean()
