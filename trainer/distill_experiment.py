"""``cartwise experiments distill``: does a distilled 2-3 layer query tower keep the served quality?

Trains a student query tower (trainer.distill) from the int8 copy a version serves, exports it to ONNX and
int8 as served copies are made, and measures in one run, for the served int8 encoder and for the student
over the same product embeddings: the served hybrid validation nDCG@10 and Recall@100 (the ranking
``cartwise eval --dataset homedepot`` scores: cartwise.retrieval over Qdrant Edge, one product per
identical text) and the CPU time of embedding one query on one thread. The student is adoptable only if
both metrics stay within :data:`TOLERANCE` of the served encoder's (issue #31 item 2)."""

from __future__ import annotations

import logging
from dataclasses import replace

from cartwise.machine import machine_info
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
    out = settings.data_dir / "experiments" / f"distill-L{config.layers}"
    student = distill_student(settings, registry, served, config, out)

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
            "student_dir": str(student.int8), "machine": machine_info()}


def distill_section(results: list[dict]) -> str:
    """Markdown for docs/training.md from ``cartwise experiments distill`` results (one per student size;
    empty when none was run)."""
    from trainer.evaluation.report import markdown_table

    if not results:
        return ""
    first = results[0]
    header = ["run", "served int8 nDCG@10 / Recall@100", "student nDCG@10 / Recall@100", "Δ nDCG@10",
              "Δ Recall@100", "query CPU ms, served / student (1 thread)", "CPU ratio", "adopt (within 0.005)"]
    rows = [[f"{r['config']['layers']}-layer student of {r['served_version']} (6 layers)",
             f"{r['served']['ndcg@10']:.4f} / {r['served']['recall@100']:.4f}",
             f"{r['student']['ndcg@10']:.4f} / {r['student']['recall@100']:.4f}", f"{r['delta']['ndcg@10']:+.4f}",
             f"{r['delta']['recall@100']:+.4f}",
             f"{r['served']['cpu_ms_median']:.3f} / {r['student']['cpu_ms_median']:.3f}",
             f"{r['cpu_ratio']:.2f}", "yes" if r["adopt"] else "no"] for r in results]
    machine = first["machine"]
    return f"""## Distilled query tower (issue #31, `cartwise experiments distill --layers N`)

A 2-3 layer student of the served int8 encoder embeds queries; products keep the served 6-layer
embeddings (trainer/distill.py). Served hybrid validation ranking (as `cartwise eval --dataset homedepot`:
Qdrant Edge, one product per identical text, the {first['served'].get('queries', 'all')} validation queries),
and the CPU time of embedding one query on one thread (median over {first['served']['timed_queries']}
validation queries; the served and student encoders take turns query by query in the same run).
{first['served_version']} is the int8 copy of {first['source_version']}, the encoder a first `cartwise serve`
activates when {first['source_version']} is the pretrained export (issue #31's 4.6 ms per query was the
fp32 copy).

{markdown_table(header, rows)}

Training: {first['train_queries']} train-split queries plus {first['train_texts'] - first['train_queries']}
catalog-title prefixes (1-{first['config']['max_words']} words), {first['config']['steps']} steps of
{first['config']['batch_size']}, 1 - cos to the teacher + {first['config']['contrastive_weight']} × InfoNCE against the
frozen product vectors; student layers initialised from the teacher's ({first['config']['init']}).
Machine: {machine['cpu']}, {machine['cores']} cores shared with other work while it ran, so the ms are
indicative; rerun on a quiet machine with `nice -n 10 cartwise experiments distill --layers 3 --json`.
The served index's HNSW build is not bit-identical from run to run, so the served figures can move by a
few 1e-4 between runs.

Serving it: `cartwise models distill vN --layers 3` publishes vN's product tower (the same model.onnx) with
the student as query.onnx as a new candidate; `cartwise eval --model <it>` scores it as served and
`cartwise models activate` swaps both towers together. A first start still serves the full int8 encoder,
and `trainer cycle` distills its candidate only with `CARTWISE_QUERY_TOWER_LAYERS` > 0 (else its output
says the candidate serves queries with the full encoder).
"""
