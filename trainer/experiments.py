"""``cartwise experiments ablation``: the issue #4 ablation and convergence runs, resumable arm by arm.

Every arm trains from the pretrained encoder with the same budget and seed and is scored on the whole
Home Depot validation split over the whole catalog (exact search, so the ANN index plays no part)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cartwise.settings import Settings
from trainer.assembly import setup_homedepot, validate_full
from trainer.config import TrainConfig
from trainer.driver import train_homedepot
from trainer.evaluation.metrics import scalar_metrics
from trainer.evaluation.run import eval_homedepot

log = logging.getLogger(__name__)

NO_MASK = {"fn_margin": None, "roar_weight": 0.0}
ARMS: dict[str, dict] = {
    "random": {"negatives": "random", **NO_MASK},
    "in-batch only": {"negatives": "inbatch", "negatives_per_query": 0, **NO_MASK},
    "bm25": {"negatives": "bm25", **NO_MASK},
    "ance": {"negatives": "ance", **NO_MASK},
    "tb-hns": {"negatives": "tbhns", **NO_MASK},
    "tb-hns + fn mask": {"negatives": "tbhns", "roar_weight": 0.0},
    "tb-hns + fn mask + roar": {"negatives": "tbhns"},  # the default `cartwise train` configuration
    "ance + fn mask + roar": {"negatives": "ance"},  # added after ANCE led the single-negative arms
}
PUBLISHED_ARMS = ("tb-hns + fn mask + roar", "ance + fn mask + roar")


def baselines(settings: Settings) -> dict[str, dict]:
    """BM25 and the pretrained encoder on the validation split, same protocol as the arms."""
    results = eval_homedepot(settings, ["bm25"], split="val")
    results["pretrained"] = pretrained_exact(settings)
    return {name: scalar_metrics(m) for name, m in results.items()}


def pretrained_exact(settings: Settings) -> dict:
    """The untrained encoder through the training code path (exact search over the whole catalog)."""
    return validate_full(setup_homedepot(settings, TrainConfig()))


def run_ablation(settings: Settings, out: Path, arms: list[str] | None = None, steps: int | None = None) -> dict:
    """Run every arm; results accumulate in ``out`` (JSON) after each one, and an interrupted arm
    resumes from its last checkpoint."""
    results = json.loads(out.read_text()) if out.exists() else {}
    if "baselines" not in results:
        results["baselines"] = baselines(settings)
        _write(out, results)
    for name in arms or list(ARMS):
        if name in results.get("arms", {}):
            continue
        overrides = {**ARMS[name], **({"steps": steps} if steps else {})}
        config = TrainConfig(**overrides)
        outcome = train_homedepot(settings, config, run_name=f"ablation-{name.replace(' ', '')}", resume=True,
                                  publish=name in PUBLISHED_ARMS)
        results.setdefault("arms", {})[name] = {
            "config": overrides, "val": scalar_metrics(outcome.val_metrics), "seconds": outcome.seconds,
            "version": outcome.manifest.version if outcome.manifest else None,
            **outcome.result.to_json()}
        _write(out, results)
        log.info("%s: val nDCG@10 %.4f", name, outcome.val_metrics["ndcg@10"])
    return results


def _write(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=lambda v: float(v) if isinstance(v, np.floating) else str(v)))
