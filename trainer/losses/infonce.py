"""InfoNCE with a false-negative margin mask (docs/architecture.md, "Stage 1"; the Flipkart taxonomy-hard-negatives
paper, section on false negatives; InfoNCE: van den Oord et al. 2018, "Representation Learning with
Contrastive Predictive Coding").

For B queries against M candidate documents with scores s_ij and the positive column p(i):

    L = -(1/B) Σ_i log [ exp(s_i,p(i)/τ) / (exp(s_i,p(i)/τ) + Σ_{j≠p(i)} m_ij exp(s_ij/τ)) ]
    m_ij = 1[ s_ij ≤ s_i,p(i) + δ ] · 1[ j not judged relevant for query i ]

A candidate scoring more than δ above the labelled positive is a probable unlabelled duplicate of
it and leaves the denominator; so does any candidate judged relevant for the query.
"""

from __future__ import annotations

import torch


def false_negative_mask(scores: torch.Tensor, positive: torch.Tensor, delta: float | None) -> torch.Tensor:
    """(B, M) bool: True where candidate j stays a negative for query i, i.e. s_ij ≤ s_i,p(i) + δ.

    ``delta`` None keeps every candidate (no margin mask). The comparison uses detached scores: the
    mask is a selection, not something to differentiate."""
    if delta is None:
        return torch.ones_like(scores, dtype=torch.bool)
    s = scores.detach()
    return s <= s.gather(1, positive[:, None]) + delta


def masked_infonce(scores: torch.Tensor, positive: torch.Tensor, excluded: torch.Tensor | None = None,
                   temperature: float = 0.05, delta: float | None = 0.1) -> torch.Tensor:
    """Mean InfoNCE over the batch. ``scores`` (B, M) float cosine similarities; ``positive`` (B,) int64
    column of each query's positive; ``excluded`` (B, M) bool, True for candidates judged relevant
    (they never count as negatives). Returns a scalar tensor.

    Raises ValueError when shapes disagree."""
    if scores.dim() != 2 or positive.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (B, M) and positive (B,), got {tuple(scores.shape)} and {tuple(positive.shape)}")
    keep = false_negative_mask(scores, positive, delta)
    if excluded is not None:
        keep = keep & ~excluded
    keep = keep.scatter(1, positive[:, None], True)  # the positive always stays in the denominator
    logits = (scores / temperature).masked_fill(~keep, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, positive)
