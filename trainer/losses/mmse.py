"""MMSE: multi-stage, multi-grained behavior loss (docs/architecture.md, "Multi-stage, multi-grained behavior";
the MMSE paper's global retrieval + local ranking objectives).

Stages (purchase ≻ cart ≻ view ≻ shown ≻ random catalog item) form each query's graded group.

    L = L_global + λ · L_local
    L_global = InfoNCE of the top-stage item against in-batch and random negatives (recall)
    L_local  = ROAR over the ordered stages (order)
"""

from __future__ import annotations

import torch

from trainer.losses.infonce import masked_infonce
from trainer.losses.roar import roar_loss


def mmse_loss(scores: torch.Tensor, positive: torch.Tensor, group: torch.Tensor, stages: torch.Tensor,
              excluded: torch.Tensor | None = None, temperature: float = 0.05, local_weight: float = 1.0,
              local_temperature: float = 0.01) -> torch.Tensor:
    """Scalar loss. ``scores`` (B, M); ``positive`` (B,) the top-stage column; ``group``/``stages``
    (B, G) stage columns and stage ranks (higher = stronger signal), sorted descending, −1 padded;
    ``excluded`` (B, M) bool, candidates the user also engaged with (never negatives in L_global)."""
    global_loss = masked_infonce(scores, positive, excluded, temperature, delta=None)
    return global_loss + local_weight * roar_loss(scores, group, stages, local_temperature)
