"""Distilling a registry version's query tower (trainer/distill.py) and publishing it with the version's
product tower as a new version: ``cartwise models distill vN`` and a trainer cycle with
``CARTWISE_QUERY_TOWER_LAYERS`` > 0.

The new version holds vN's model.onnx unchanged (products keep their embeddings: the same bytes, the same
sha256, so cached catalog vectors are reused) and the student as query.onnx, int8 when vN is (its
manifest names both towers, cartwise/registry.py). It is an ordinary candidate: evaluated, gated and
swapped as a whole, so the API never pairs one version's query tower with another's products."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cartwise.registry import MODEL_FILE, QUERY_TOWER_FILE, TOKENIZER_FILE, WEIGHTS_FILE, Manifest, ModelRegistry
from cartwise.settings import Settings
from encoders.model import DualEncoder
from trainer.assembly import tokenizer_path
from trainer.data import labeled_queries, split_queries
from trainer.distill import (DistillConfig, DistillData, embed_texts, export_student, make_student, train_student,
                             training_texts)
from trainer.encoding import load_tokenizer
from trainer.evaluation.homedepot import cached_catalog_vectors, catalog_texts, load_homedepot

log = logging.getLogger(__name__)


@dataclass
class Student:
    """A distilled query tower exported to ONNX: the fp32 and int8 directories (model.onnx +
    tokenizer.json each), the torch/ONNX max abs difference, what it trained on and how long it took."""

    fp32: Path
    int8: Path
    export_max_abs_diff: float
    train_texts: int
    train_queries: int
    final_loss: float
    seconds: float


def distill_student(settings: Settings, registry: ModelRegistry, version: str, config: DistillConfig,
                    out: Path) -> Student:
    """Distill ``version`` (the teacher: its torch weights, its served product vectors of the Home Depot
    catalog as the contrastive targets) into a ``config.layers``-layer student under ``out``. Trains on
    the Home Depot train split only (trainer/distill.py). Raises RegistryError for a missing version."""
    started = time.perf_counter()
    data = load_homedepot()
    ids, texts = catalog_texts(data)
    train, _ = split_queries(labeled_queries(data.qrels, {pid: i for i, pid in enumerate(ids)}))
    products = cached_catalog_vectors(registry, version, texts, settings.data_dir / "eval_cache")
    teacher = DualEncoder.from_registry(registry, version)
    tokenizer = load_tokenizer(tokenizer_path(), config.max_query_tokens)
    train_texts, positives = training_texts(train, texts, config)
    distill_data = DistillData(train_texts, embed_texts(teacher, tokenizer, train_texts), positives)
    student = make_student(teacher, config.layers, config.init)
    losses = train_student(student, tokenizer, distill_data, products, config)
    int8, diff = export_student(student, tokenizer_path(), out, registry.manifest(version).max_tokens)
    return Student(out / "fp32", int8, diff, len(train_texts), len(train), float(np.mean(losses[-50:])),
                   time.perf_counter() - started)


def publish_distilled(settings: Settings, version: str, config: DistillConfig) -> Manifest:
    """Publish ``version``'s product tower with a distilled query tower (int8 when ``version`` is an int8
    copy, else fp32) as the registry's next version, a candidate; its manifest config records
    ``query_tower`` (layers, what it was distilled from, the distillation config). Raises RegistryError
    for a missing or corrupt ``version``, ValueError when ``version`` has a distilled tower already."""
    registry = ModelRegistry(settings.models_dir)
    source = registry.verify(version)
    if source.distilled:
        raise ValueError(f"{version} has a distilled query tower already; distill the version it was made from")
    staging = registry.staging_dir()
    try:
        student = distill_student(settings, registry, version, config, staging / "student")
        tower = student.int8 if source.config.get("quantized_from") else student.fp32
        shutil.copyfile(tower / MODEL_FILE, staging / QUERY_TOWER_FILE)
        for name in (MODEL_FILE, TOKENIZER_FILE, WEIGHTS_FILE):
            if (registry.path(version) / name).exists():
                shutil.copyfile(registry.path(version) / name, staging / name)
        shutil.rmtree(staging / "student")
        inherited = {k: v for k, v in source.config.items() if k != "quantized_from"}  # not an int8 copy itself
        manifest = registry.publish(
            staging, dims=source.dims, base=source.base, max_tokens=source.max_tokens,
            config={**inherited, "product_tower_of": version,
                    "query_tower": {"layers": config.layers, "distilled_from": version,
                                    "precision": "int8" if tower == student.int8 else "fp32",
                                    "export_max_abs_diff": student.export_max_abs_diff,
                                    "final_loss": student.final_loss, "seconds": round(student.seconds, 1),
                                    "config": config.model_dump()}})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("published %s: %s's product tower with a %d-layer distilled query tower", manifest.version, version,
             config.layers)
    return manifest
