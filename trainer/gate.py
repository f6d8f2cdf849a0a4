"""The quality gate between a candidate encoder and the active one (issue #5): the candidate may not be
worse than the active version on the Home Depot validation judgments, ranked as served (hybrid), by
more than a margin."""

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
    """Validation metrics of a registry version as served: its ONNX model ranking the validation queries
    by the hybrid retrieval through a Qdrant Edge index of the whole catalog (``cartwise eval``'s path).
    Cached on disk per (both towers' sha256, judgments file, products file, lexical settings) so the active
    version is scored once."""
    from cartwise.datasets import data_root
    from cartwise.registry import ModelRegistry
    from trainer.evaluation.run import eval_homedepot

    root = data_root() / "homedepot"
    files = [judgments or root / "judgments.csv", products or root / "products.csv"]
    key = hashlib.sha256(ModelRegistry(settings.models_dir).verify(version).towers_digest.encode()
                         + b"".join(hashlib.sha256(f.read_bytes()).digest() for f in files)
                         + settings.lexical.model_dump_json().encode()).hexdigest()[:20]
    path = settings.data_dir / "gate" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    served = eval_homedepot(settings, [version], judgments, "val", products, "hybrid")[version]
    metrics = scalar_metrics({k: v for k, v in served.items() if k not in ("version", "retrieval")})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return metrics
