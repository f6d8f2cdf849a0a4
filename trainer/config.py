"""Training configuration (one pydantic model; the CLI sets it, the manifest records it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Negatives = Literal["random", "inbatch", "bm25", "ance", "tbhns"]


class TrainConfig(BaseModel):
    """Everything that decides a training run. Defaults are the CPU configuration (2 cores, ~6 min of steps)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt --set key is an error, not a silent default

    dataset: Literal["homedepot", "kafka"] = "homedepot"
    negatives: Negatives = "tbhns"
    negatives_per_query: int = Field(3, ge=0, description="mined negatives per query (0 with inbatch)")
    curriculum_steps: int = Field(100, ge=0, description="TB-HNS easy -> hard over this many steps (0: hard)")
    same_leaf: float = Field(1.0, ge=0, description="TB-HNS hard-mix weight of same-leaf negatives")
    sibling: float = Field(2.0, ge=0)
    cousin: float = Field(1.0, ge=0)
    other_department: float = Field(0.0, ge=0)
    mine_depth: int = Field(50, ge=1, description="BM25 / ANCE candidates sampled from per query")
    ance_refresh_steps: int = Field(125, ge=1, description="re-rank the train queries with the current model every N steps")

    loss: Literal["contrastive", "mmse"] = Field("contrastive", description="stage 1/2 losses, or MMSE for behavior stages")
    temperature: float = Field(0.05, gt=0, description="InfoNCE τ")
    fn_margin: float | None = Field(0.1, description="false-negative margin δ; None disables the mask")
    roar_weight: float = Field(0.1, ge=0, description="β of L_contrast + β·L_align (λ of the MMSE local loss); 0: off")
    roar_temperature: float = Field(0.01, gt=0, description="ROAR τ_a")
    positive_grade: float = Field(2.5, description="judged grade that makes a training positive")
    exclude_grade: float = Field(2.0, description="judged grade at or above which a product is never a negative")

    batch_size: int = Field(32, ge=2)
    steps: int = Field(250, ge=1)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    trainable_layers: int = Field(2, ge=1, description="top transformer layers trained (6 = all of MiniLM-L6)")
    projection_dim: int | None = Field(384, description="projection head width (384 starts as the identity); None: no head")
    max_query_tokens: int = Field(16, ge=4)
    max_product_tokens: int = Field(32, ge=8)

    selection: Literal["hybrid", "dense"] = Field(
        "hybrid", description="the ranking validation scores (early stopping, best step, final metrics): the "
                              "served hybrid fusion with BM25, or the encoder alone")
    val_every: int = Field(50, ge=1)
    val_queries: int = Field(300, ge=10, description="validation queries scored during training")
    val_distractors: int = Field(5000, ge=0, description="random unjudged products added to the validation corpus")
    patience: int = Field(3, ge=1, description="validations without improvement before stopping early")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
