"""A shallow query tower distilled from a version's encoder (issue #31 item 2): an asymmetric dual encoder
whose products keep the version's embeddings (no re-embedding) and whose queries are embedded by a 2-3
layer student.

The student is the teacher with fewer transformer layers (initialised from the teacher's own layers, as
DistilBERT and KALE do), trained so its query embedding matches the teacher's:

    L = (1/B) Σ_i (1 - <ŝ_i, t̂_i>)  +  λ · InfoNCE(ŝ, frozen product vectors, τ)

where ŝ, t̂ are the L2-normalized student and teacher embeddings (1 - cosine is half the squared distance
of unit vectors, i.e. MSE up to a factor) and the InfoNCE term pulls a query toward the frozen served
embedding of a product it is judged relevant to, against the batch's other products (KALE: Campos, Magnani
& Zhai 2023, post-training alignment of a pruned query encoder to a frozen document encoder; TwinBERT: Lu,
Jiao & Zhang, CIKM 2020).

Training texts: the Home Depot TRAIN split's queries (trainer.data.split_queries; never a validation
query) and pseudo-queries made of the first 1-6 words of catalog titles, so the student sees the short
texts it will embed; a pseudo-query's positive is its own product. The catalog is what the service embeds
anyway, so no judgment of a validation query is used."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from encoders.model import DualEncoder
from trainer.encoding import pad

log = logging.getLogger(__name__)


class DistillConfig(BaseModel):
    """Everything that decides a distillation run (defaults: minutes on one CPU thread)."""

    model_config = ConfigDict(extra="forbid")

    layers: int = Field(3, ge=1, description="transformer layers of the student query tower")
    init: str = Field("spread", pattern="^(spread|first)$",
                      description="teacher layers the student starts from: evenly spread, first and last kept "
                                  "(6 -> 3: 0, 2, 5), or the first ones")
    steps: int = Field(600, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(30, ge=0)
    contrastive_weight: float = Field(0.1, ge=0, description="λ of the InfoNCE term against frozen product vectors")
    temperature: float = Field(0.05, gt=0, description="InfoNCE τ")
    pseudo_queries: int = Field(8000, ge=0, description="catalog-title prefixes added to the train queries")
    max_words: int = Field(6, ge=1, description="longest pseudo-query, in words")
    positive_grade: float = Field(2.5, description="judged grade that makes a train query's positive")
    max_query_tokens: int = Field(16, ge=4)
    seed: int = 0


def student_layers(teacher_layers: int, layers: int, init: str) -> list[int]:
    """Indices of the teacher layers the student keeps, in order. "spread" keeps the first and the last
    and spaces the rest evenly; "first" keeps the bottom ``layers``. Raises ValueError unless
    1 <= layers <= teacher_layers."""
    if not 1 <= layers <= teacher_layers:
        raise ValueError(f"a student has 1..{teacher_layers} layers, not {layers}")
    if init == "first" or layers == 1:
        return list(range(layers))
    return [int(round(i)) for i in np.linspace(0, teacher_layers - 1, layers)]


def make_student(teacher: DualEncoder, layers: int, init: str = "spread") -> DualEncoder:
    """A copy of ``teacher`` keeping only :func:`student_layers`; its word embeddings are frozen (the
    teacher's vocabulary space is what both towers share; training them would cost an Adam update of
    11.7M parameters a step for little)."""
    student = copy.deepcopy(teacher)
    keep = student_layers(teacher.num_layers, layers, init)
    student.backbone.encoder.layer = torch.nn.ModuleList([student.backbone.encoder.layer[i] for i in keep])
    student.backbone.config.num_hidden_layers = layers
    student.backbone.embeddings.word_embeddings.weight.requires_grad = False
    return student


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, products: torch.Tensor, positive: torch.Tensor,
                 weight: float, temperature: float) -> torch.Tensor:
    """Scalar loss of a batch: mean (1 - cos) between ``student`` and ``teacher`` (B, D) unit rows, plus
    ``weight`` × InfoNCE of each student row against ``products`` (B, D) unit rows, the positive of row i
    being products[i]. ``positive`` (B,) bool says which rows have a positive (others only align); a
    column holding the same vector as row i's positive is not a negative of row i. Raises ValueError
    when shapes disagree."""
    if student.shape != teacher.shape or products.shape != student.shape or positive.shape != student.shape[:1]:
        raise ValueError(f"student, teacher, products must be (B, D) and positive (B,): {tuple(student.shape)}, "
                         f"{tuple(teacher.shape)}, {tuple(products.shape)}, {tuple(positive.shape)}")
    loss = (1.0 - (student * teacher).sum(-1)).mean()
    if weight == 0 or not bool(positive.any()):
        return loss
    scores = student[positive] @ products[positive].T / temperature
    same = torch.cdist(products[positive], products[positive]) < 1e-6
    same.fill_diagonal_(False)
    target = torch.arange(len(scores), device=scores.device)
    return loss + weight * torch.nn.functional.cross_entropy(scores.masked_fill(same, float("-inf")), target)


@dataclass
class DistillData:
    """Training texts with the teacher's embedding of each (N, D) and each text's positive product
    (index into the catalog, -1 for none)."""

    texts: list[str]
    targets: torch.Tensor
    positives: np.ndarray


def training_texts(train_queries, titles: list[str], config: DistillConfig) -> tuple[list[str], np.ndarray]:
    """(texts, positive product per text): every train query (its best positive graded at least
    ``config.positive_grade``, else -1) and ``config.pseudo_queries`` title prefixes of 1..max_words words
    (each its own product's), drawn with ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    texts = [q.text for q in train_queries]
    positives = [next(iter(q.positives(config.positive_grade)), -1) for q in train_queries]
    for product in rng.choice(len(titles), size=min(config.pseudo_queries, len(titles)), replace=False):
        words = titles[product].split()
        texts.append(" ".join(words[: int(rng.integers(1, config.max_words + 1))]))
        positives.append(int(product))
    return texts, np.array(positives)


@torch.no_grad()
def embed_texts(model: DualEncoder, tokenizer, texts: list[str], batch: int = 256,
                label: str = "teacher") -> torch.Tensor:
    """(N, D) float32 unit rows of ``texts`` by ``model`` (eval mode), in length-sorted batches."""
    model.eval()
    tokens = [e.ids for e in tokenizer.encode_batch(texts)]
    order = np.argsort([len(t) for t in tokens], kind="stable")
    out = torch.zeros(len(texts), model(*pad([[101, 102]])).shape[-1])
    for start in tqdm(range(0, len(order), batch), desc=f"embedding {len(texts)} texts ({label})", unit="batch"):
        rows = order[start:start + batch]
        out[torch.from_numpy(rows)] = model(*pad([tokens[i] for i in rows]))
    return out


def train_student(student: DualEncoder, tokenizer, data: DistillData, catalog: np.ndarray,
                  config: DistillConfig) -> list[float]:
    """Train ``student`` in place on ``data`` against the frozen ``catalog`` (N, D) product vectors;
    returns the loss of every step. AdamW with linear warm-up and decay, dropout on."""
    torch.manual_seed(config.seed)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    warmup = max(config.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (config.steps - s) / max(config.steps - warmup, 1))))
    tokens = [e.ids for e in tokenizer.encode_batch(data.texts)]
    rng, losses, order = np.random.default_rng(config.seed + 1), [], np.array([], dtype=np.int64)
    student.train()
    with tqdm(total=config.steps, desc=f"distilling a {len(student.backbone.encoder.layer)}-layer query tower",
              unit="step") as bar:
        for _ in range(config.steps):
            if len(order) < config.batch_size:
                order = np.concatenate([order, rng.permutation(len(tokens))])
            rows, order = order[: config.batch_size], order[config.batch_size:]
            positive = data.positives[rows]
            products = torch.from_numpy(catalog[np.maximum(positive, 0)].astype(np.float32))
            loss = distill_loss(student(*pad([tokens[i] for i in rows])), data.targets[torch.from_numpy(rows)],
                                products, torch.from_numpy(positive >= 0), config.contrastive_weight,
                                config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    student.eval()
    return losses


def query_cpu_ms(encoders: dict, queries: list[str], warm_up: int = 20) -> dict[str, dict[str, float]]:
    """Per encoder (name -> encoders.runtime.OnnxEncoder, one intra-op thread each), the median CPU time
    (time.thread_time: ONNX Runtime runs a one-thread session on the calling thread) and wall time of
    embedding one query, in ms, over ``queries``. The encoders take turns query by query, so load from other
    processes falls on all alike."""
    for encoder in encoders.values():
        for query in queries[:warm_up]:
            encoder.encode([query])
    cpu = {name: [] for name in encoders}
    wall = {name: [] for name in encoders}
    for query in queries:
        for name, encoder in encoders.items():
            started_cpu, started = time.thread_time(), time.perf_counter()
            encoder.encode([query])
            cpu[name].append(time.thread_time() - started_cpu)
            wall[name].append(time.perf_counter() - started)
    return {name: {"cpu_ms_median": round(1e3 * float(np.median(cpu[name])), 3),
                   "wall_ms_median": round(1e3 * float(np.median(wall[name])), 3), "timed_queries": len(queries)}
            for name in encoders}


def export_student(student: DualEncoder, tokenizer_file: Path, out: Path, max_tokens: int) -> tuple[Path, float]:
    """Export ``student`` to ``out``/fp32 (verified against torch) and its int8 copy to ``out``/int8 (as
    encoders.quantize makes served copies); returns (the int8 directory, the torch/ONNX max abs diff)."""
    import shutil

    from cartwise.registry import MODEL_FILE, TOKENIZER_FILE
    from encoders.export import export_verified
    from encoders.quantize import quantize_file

    fp32, int8 = out / "fp32", out / "int8"
    for directory in (fp32, int8):
        directory.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        diff = export_verified(student.eval(), fp32, tokenizer_file, max_tokens)
    quantize_file(fp32 / MODEL_FILE, int8 / MODEL_FILE)
    shutil.copyfile(fp32 / TOKENIZER_FILE, int8 / TOKENIZER_FILE)
    return int8, diff
