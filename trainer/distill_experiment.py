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
from dataclasses import replace

from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from encoders.quantize import served_copy
from encoders.runtime import OnnxEncoder
from trainer.data import split_of
from trainer.distill import DistillConfig, query_cpu_ms
from trainer.evaluation.homedepot import embed, load_homedepot, served_catalog
from trainer.evaluation.metrics import evaluate_rankings, scalar_metrics
from trainer.query_tower import distill_student

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
    student = distill_student(settings, registry, served, config, settings.data_dir / "experiments" / f"distill-L{config.layers}")

    data = load_homedepot()
    val = replace(data, qrels={q: j for q, j in data.qrels.items() if split_of(q) == "val"})
    served_encoder = OnnxEncoder(registry.path(served), manifest.max_tokens, threads=1)
    student_encoder = OnnxEncoder(student.int8, manifest.max_tokens, threads=1)
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
            "train_texts": student.train_texts, "train_queries": student.train_queries,
            "final_loss": student.final_loss, "train_seconds": round(student.seconds, 1),
            "export_max_abs_diff": student.export_max_abs_diff,
            "student_dir": str(student.int8), "machine": f"{platform.processor() or platform.machine()}, "
                                                         f"{_cores()} cores (shared)"}


def _cores() -> int:
    import os

    return os.cpu_count() or 0
