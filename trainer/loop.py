"""The training loop: seeded, checkpointed and resumable, validated every N steps with early stopping.

Runs on CPU or CUDA (automatic mixed precision on CUDA). Wall-clock is kept in two parts so convergence
can be compared fairly: ``train_seconds`` (optimizer steps + negative mining, ANCE re-ranking included)
and validation time, which is measurement and is left out."""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from trainer.batch import build_batch
from trainer.config import TrainConfig
from trainer.data import LabeledQuery
from trainer.encoding import TextEncoder
from trainer.evaluation.metrics import exact_top_k, scalar_metrics
from trainer.losses import masked_infonce, mmse_loss, roar_loss
from trainer.miners import ANCEMiner
from trainer.miners.base import Miner
from trainer.validation import Validator

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"


@dataclass
class ValPoint:
    """One validation: step, training seconds so far (mining included), metrics, mean loss since the last."""

    step: int
    train_seconds: float
    mining_seconds: float
    loss: float | None
    metrics: dict


@dataclass
class TrainResult:
    """History of validations, the best step (its weights are loaded into the model) and why it stopped."""

    history: list[ValPoint] = field(default_factory=list)
    best_step: int = 0
    best_ndcg: float = float("-inf")
    stopped_early: bool = False
    steps_run: int = 0

    def to_json(self) -> dict:
        """JSON-ready dict (recall curves dropped)."""
        return {**asdict(self), "history": [{**asdict(p), "metrics": scalar_metrics(p.metrics)} for p in self.history]}


class Trainer:
    """Trains ``encoder.model`` on labelled train queries with a miner and the stage-1/2 losses."""

    def __init__(self, config: TrainConfig, encoder: TextEncoder, train: list[LabeledQuery], validator: Validator,
                 miner: Miner | None, run_dir: Path) -> None:
        self.config, self.encoder, self.validator, self.miner, self.run_dir = config, encoder, validator, miner, run_dir
        self.train = [(i, q) for i, q in enumerate(train) if q.positives(config.positive_grade)]
        self.texts = [q.text for q in train]
        self.model = encoder.model
        self.device = next(self.model.parameters()).device
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        warmup, total = max(config.warmup_steps, 1), config.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(total - warmup, 1))))
        self.rng = np.random.default_rng(config.seed)
        self.result, self.step, self.train_seconds, self.mining_seconds = TrainResult(), 0, 0.0, 0.0
        self.best_state: dict | None = None
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def fit(self, resume: bool = False) -> TrainResult:
        """Train up to ``config.steps`` (continuing a checkpoint in ``run_dir`` when ``resume``), then
        load the best validated weights into the model."""
        torch.manual_seed(self.config.seed)
        if resume and (self.run_dir / CHECKPOINT).exists():
            self._load()
        if not self.result.history:
            self._validate(None)
        order, losses = self._order(), []
        with tqdm(total=self.config.steps, initial=self.step, desc=f"training ({self.config.negatives})", unit="step") as bar:
            while self.step < self.config.steps and not self.result.stopped_early:
                losses.append(self._train_step(order))
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", ndcg=f"{self.result.history[-1].metrics['ndcg@10']:.4f}")
                if self.step % self.config.val_every == 0 or self.step == self.config.steps:
                    self._validate(float(np.mean(losses)))
                    losses = []
        self.result.steps_run = self.step
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.result

    def _order(self) -> list[int]:
        """An endless stream of shuffled epochs over the train queries, as positions into self.train."""
        epochs = -(-self.config.steps * self.config.batch_size // len(self.train)) + 1
        rng = np.random.default_rng(self.config.seed + 1)  # its own stream: a resumed run sees the same order
        return [int(i) for _ in range(epochs) for i in rng.permutation(len(self.train))]

    def _train_step(self, order: list[int]) -> float:
        started = time.perf_counter()
        if isinstance(self.miner, ANCEMiner) and (self.miner.top is None or self.step % self.config.ance_refresh_steps == 0):
            self._refresh_ance()
        start = self.step * self.config.batch_size
        examples = [self.train[i] for i in order[start:start + self.config.batch_size]]
        batch = build_batch(examples, self.miner, self.config, self.step, self.rng).to(self.device)
        self.mining_seconds += time.perf_counter() - started
        self._set_train_mode()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            scores = self.encoder.queries(batch.queries) @ self.encoder.products(batch.products).T
        scores = scores.float()
        loss = self._loss(scores, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.train_seconds += time.perf_counter() - started
        return float(loss.detach())

    def _loss(self, scores: torch.Tensor, batch) -> torch.Tensor:
        c = self.config
        if c.loss == "mmse":
            return mmse_loss(scores, batch.positive, batch.group, batch.grades, batch.excluded, c.temperature,
                             c.roar_weight, c.roar_temperature)
        loss = masked_infonce(scores, batch.positive, batch.excluded, c.temperature, c.fn_margin)
        if c.roar_weight:
            loss = loss + c.roar_weight * roar_loss(scores, batch.group, batch.grades, c.roar_temperature)
        return loss

    def _set_train_mode(self) -> None:
        """Dropout only in the trained layers: frozen ones must match the cached states."""
        self.model.train()
        self.model.backbone.embeddings.eval()
        for layer in self.model.backbone.encoder.layer[: self.encoder.frozen]:
            layer.eval()

    def _refresh_ance(self) -> None:
        self.model.eval()
        catalog = self.encoder.catalog()
        queries = self.encoder.query_matrix(self.texts)
        self.miner.refresh(exact_top_k(queries, catalog, self.config.mine_depth))

    def _validate(self, loss: float | None) -> None:
        self.model.eval()
        metrics = self.validator.run(self.encoder)
        point = ValPoint(self.step, self.train_seconds, self.mining_seconds, loss, metrics)
        self.result.history.append(point)
        log.info("step %d: val nDCG@10 %.4f R@100 %.4f", self.step, metrics["ndcg@10"], metrics["recall@100"])
        if metrics["ndcg@10"] > self.result.best_ndcg:
            self.result.best_ndcg, self.result.best_step = metrics["ndcg@10"], self.step
            self.best_state = copy.deepcopy(self.model.state_dict())
        elif self.step - self.result.best_step >= self.config.patience * self.config.val_every:
            self.result.stopped_early = True
        self._save()

    def _save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        miner_rng = getattr(self.miner, "rng", None)
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "step": self.step, "result": self.result,
                 "best_state": self.best_state, "train_seconds": self.train_seconds,
                 "mining_seconds": self.mining_seconds, "rng": self.rng.bit_generator.state,
                 "miner_rng": miner_rng.bit_generator.state if miner_rng is not None else None,
                 "torch_rng": torch.get_rng_state(), "config": self.config.model_dump()}
        torch.save(state, self.run_dir / f"{CHECKPOINT}.tmp")
        (self.run_dir / f"{CHECKPOINT}.tmp").replace(self.run_dir / CHECKPOINT)
        (self.run_dir / HISTORY).write_text(json.dumps(self.result.to_json(), indent=1))

    def _load(self) -> None:
        """Restore a checkpoint written by the same configuration. Raises ValueError otherwise."""
        state = torch.load(self.run_dir / CHECKPOINT, weights_only=False)
        if state["config"] != self.config.model_dump():
            raise ValueError(f"{self.run_dir / CHECKPOINT} was written with another configuration")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.result, self.best_state = state["step"], state["result"], state["best_state"]
        self.train_seconds, self.mining_seconds = state["train_seconds"], state["mining_seconds"]
        self.rng.bit_generator.state = state["rng"]
        if state["miner_rng"] is not None:
            self.miner.rng.bit_generator.state = state["miner_rng"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed %s at step %d", self.run_dir, self.step)
