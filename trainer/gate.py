"""The quality gate between a candidate encoder and the active one (issue #5): the candidate may not be
worse than the active version on the Home Depot validation judgments by more than a margin."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cartwise.settings import Settings
from trainer.evaluation.metrics import scalar_metrics

GATE_METRIC = "ndcg@10"


@dataclass(frozen=True)
class Verdict:
    """Whether the candidate may be activated, and why (recorded in the registry either way)."""

    passed: bool
    reason: str


def quality_gate(candidate: dict, active: dict | None, margin: float, metric: str = GATE_METRIC) -> Verdict:
    """Pass when ``candidate[metric] >= active[metric] - margin`` (or there is no active version).

    Raises KeyError when a metrics dict lacks ``metric``."""
    if active is None:
        return Verdict(True, f"{metric} {candidate[metric]:.4f}, no active version to compare with")
    relation = f"{metric} {candidate[metric]:.4f} vs active {active[metric]:.4f} (margin {margin})"
    if candidate[metric] >= active[metric] - margin:
        return Verdict(True, relation)
    return Verdict(False, f"gate failed: {relation}")


def gate_metrics(settings: Settings, version: str, judgments: Path | None = None, products: Path | None = None) -> dict:
    """Validation metrics of a registry version (exact search over the whole catalog), cached on disk
    per (model sha256, judgments file, products file) so the active version is scored once."""
    from cartwise.datasets import data_root
    from cartwise.registry import ModelRegistry
    from trainer.assembly import setup_homedepot, validate_full
    from trainer.config import TrainConfig

    root = data_root() / "homedepot"
    files = [judgments or root / "judgments.csv", products or root / "products.csv"]
    key = hashlib.sha256(ModelRegistry(settings.models_dir).verify(version).sha256.encode()
                         + b"".join(hashlib.sha256(f.read_bytes()).digest() for f in files)).hexdigest()[:20]
    path = settings.data_dir / "gate" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    metrics = scalar_metrics(validate_full(setup_homedepot(settings, TrainConfig(), version, judgments, products)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return metrics
