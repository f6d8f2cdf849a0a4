"""``cartwise experiments distill``: does a distilled 2-3 layer query tower keep the served quality?

Trains a student query tower (trainer.distill) from the int8 copy a version serves, exports it to ONNX and
int8 as served copies are made, and measures in one run, for the served int8 encoder and for the student
over the same product embeddings: the served hybrid validation nDCG@10 and Recall@100 (the ranking
``cartwise eval --dataset homedepot`` scores: cartwise.retrieval over Qdrant Edge, one product per
identical text) and the CPU time of embedding one query on one thread. The student is adoptable only if
both metrics stay within :data:`TOLERANCE` of the served encoder's (issue #31 item 2)."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import replace

import numpy as np

from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from encoders.model import DualEncoder
from encoders.quantize import served_copy
from encoders.runtime import OnnxEncoder
from trainer.assembly import tokenizer_path
from trainer.data import labeled_queries, split_of, split_queries
from trainer.distill import (DistillConfig, DistillData, embed_texts, export_student, make_student,
                             query_cpu_ms, train_student, training_texts)
from trainer.encoding import load_tokenizer
from trainer.evaluation.homedepot import (catalog_texts, cached_catalog_vectors, embed, load_homedepot,
                                          served_catalog)
from trainer.evaluation.metrics import evaluate_rankings, scalar_metrics

log = logging.getLogger(__name__)
TOLERANCE = 0.005  # the largest nDCG@10 or Recall@100 loss issue #31 accepts
GATED = ("ndcg@10", "recall@100")


def run_distill(settings: Settings, version: str, config: DistillConfig, timing_queries: int = 300) -> dict:
    """Distill ``version``'s int8 served copy into a ``config.layers``-layer query tower and compare
    (metrics, query CPU ms, ``adopt``). The student's ONNX files go under
    DATA_DIR/experiments/distill-L<layers>/. Raises RegistryError for an unknown version."""
    registry = ModelRegistry(settings.models_dir)
    served = served_copy(registry, version, "int8")
    manifest, cache = registry.verify(served), settings.data_dir / "eval_cache"
    data = load_homedepot()
    ids, texts = catalog_texts(data)
    train, _ = split_queries(labeled_queries(data.qrels, {pid: i for i, pid in enumerate(ids)}))
    products = cached_catalog_vectors(registry, served, texts, cache)

    started = time.perf_counter()
    teacher = DualEncoder.from_registry(registry, served)
    tokenizer = load_tokenizer(tokenizer_path(), config.max_query_tokens)
    train_texts, positives = training_texts(train, texts, config)
    distill_data = DistillData(train_texts, embed_texts(teacher, tokenizer, train_texts), positives)
    student = make_student(teacher, config.layers, config.init)
    losses = train_student(student, tokenizer, distill_data, products, config)
    out = settings.data_dir / "experiments" / f"distill-L{config.layers}"
    student_dir, export_diff = export_student(student, tokenizer_path(), out, manifest.max_tokens)
    train_seconds = time.perf_counter() - started

    val = replace(data, qrels={q: j for q, j in data.qrels.items() if split_of(q) == "val"})
    served_encoder = OnnxEncoder(registry.path(served), manifest.max_tokens, threads=1)
    student_encoder = OnnxEncoder(student_dir, manifest.max_tokens, threads=1)
    with served_catalog(val, registry, served, cache, settings.lexical) as catalog:
        teacher_rankings = catalog.rankings("hybrid", settings.lexical)
        student_catalog = replace(catalog, qvecs=embed(student_encoder, catalog.queries, "embedding queries (student)"))
        student_rankings = student_catalog.rankings("hybrid", settings.lexical)
    teacher_metrics = scalar_metrics(evaluate_rankings(teacher_rankings, val.qrels))
    student_metrics = scalar_metrics(evaluate_rankings(student_rankings, val.qrels))
    timing = query_cpu_ms({"served": served_encoder, "student": student_encoder}, list(val.qrels)[:timing_queries])
    delta = {k: round(student_metrics[k] - teacher_metrics[k], 4) for k in GATED}
    return {"served_version": served, "source_version": version, "config": config.model_dump(),
            "served": {**teacher_metrics, **timing["served"]}, "student": {**student_metrics, **timing["student"]},
            "delta": delta, "tolerance": TOLERANCE, "adopt": all(d >= -TOLERANCE for d in delta.values()),
            "cpu_ratio": round(timing["student"]["cpu_ms_median"] / timing["served"]["cpu_ms_median"], 3),
            "train_texts": len(train_texts), "train_queries": len(train), "final_loss": float(np.mean(losses[-50:])),
            "train_seconds": round(train_seconds, 1), "export_max_abs_diff": export_diff,
            "student_dir": str(student_dir), "machine": f"{platform.processor() or platform.machine()}, "
                                                         f"{_cores()} cores (shared)"}


def _cores() -> int:
    import os

    return os.cpu_count() or 0
