"""Model resolution and the evaluation entry points behind ``cartwise eval``."""

from __future__ import annotations

from pathlib import Path

from cartwise.registry import ModelRegistry, RegistryError
from cartwise.retrieval import Retrieval
from cartwise.settings import Settings
from encoders.export import pretrained_version

BM25 = "bm25"
PRETRAINED = "pretrained"
LATEST = "latest"


def resolve_model(registry: ModelRegistry, name: str) -> str:
    """Registry version for a model name: "latest" (the newest trained version), "pretrained" (the
    exported pretrained encoder, exported now if absent) or "vN". Raises RegistryError for an unknown
    name, and for "latest" when nothing has been trained yet."""
    versions = registry.versions()
    if name == LATEST:
        latest = registry.newest_trained()
        if latest is None:
            raise RegistryError("--model latest means the newest trained version, and none exists: "
                                "run `cartwise train` first (or name pretrained or vN)")
        return latest
    if name == PRETRAINED:
        return pretrained_version(registry)
    if name not in versions:
        raise RegistryError(f"unknown model {name!r}: choose bm25, pretrained, latest or one of {versions}")
    return name


def eval_homedepot(settings: Settings, models: list[str], judgments: Path | None = None,
                   split: str | None = None, products: Path | None = None,
                   retrieval: Retrieval = "hybrid", collapse: bool = True) -> dict[str, dict]:
    """Recall@10/100, nDCG@10, MRR@10 per model name over the full Home Depot catalog, ranked as the API
    serves with ``retrieval`` and ``collapse`` (one product per identical text, the API's default; ``bm25``
    is the bm25s reference and ignores both), on the queries of
    ``split`` (trainer.data.split_of; "all" for every judged query). ``split`` None means "val" for the
    shared judgments and "all" for a ``judgments`` file of one's own. Each result says how many queries
    were scored (``queries``) of how many were judged (``judged_queries``)."""
    from dataclasses import replace

    from trainer.data import split_of
    from trainer.evaluation.homedepot import bm25_rankings, load_homedepot, served_rankings
    from trainer.evaluation.metrics import evaluate_rankings

    data, registry, results = load_homedepot(judgments, products), ModelRegistry(settings.models_dir), {}
    judged, split = len(data.qrels), split or ("all" if judgments else "val")
    if split != "all":
        data = replace(data, qrels={q: j for q, j in data.qrels.items() if split_of(q) == split})
    for name in models:
        if name == BM25:
            results[name] = {**evaluate_rankings(bm25_rankings(data), data.qrels), "judged_queries": judged}
            continue
        version = resolve_model(registry, name)
        rankings, ann_recall = served_rankings(data, registry, version, settings.data_dir / "eval_cache", retrieval,
                                               settings.lexical, collapse)
        results[name] = {**evaluate_rankings(rankings, data.qrels), "judged_queries": judged, "version": version,
                         "retrieval": retrieval, "collapse": collapse, **({"ann_recall@100": ann_recall} if ann_recall is not None else {})}
    return results


def eval_rees46(settings: Settings, models: list[str], events: Path | None = None,
                retrieval: Retrieval = "hybrid") -> dict[str, dict]:
    """HitRate@10 / MRR@10 per model on REES46 (all and novel targets), ranked as served with
    ``retrieval`` and personalized too for encoder models (trainer.evaluation.rees46)."""
    from trainer.evaluation.rees46 import evaluate_rees46, evaluate_rees46_bm25

    registry, results = ModelRegistry(settings.models_dir), {}
    for name in models:
        if name == BM25:
            results[name] = evaluate_rees46_bm25(events)
            continue
        version = resolve_model(registry, name)
        figures = evaluate_rees46(registry, version, settings.personalization, settings.data_dir / "eval_cache",
                                  events, retrieval, settings.lexical)
        results[name] = {**figures, "version": version}
    return results
