"""Tuning the personalization parameters (α_max, n₀, half-life H) on REES46 with the evaluation protocol
of trainer.evaluation.rees46, on one half of the users, and reporting the choice on the other half.

Users are split in halves by the same stable hash as queries (trainer.data.split_of): "train" users
tune, "val" users report. Selection: personalized HitRate@10, then MRR@10."""

from __future__ import annotations

import itertools
from pathlib import Path

from cartwise.registry import ModelRegistry
from cartwise.retrieval import Retrieval
from cartwise.settings import Personalization, Settings
from trainer.data import split_of
from trainer.evaluation.rees46 import evaluate_rees46_grid

ALPHA_MAX = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
N0 = (1.0, 3.0, 10.0)
HALF_LIFE_S = (1800.0, 6 * 3600.0, 7 * 24 * 3600.0)
USER_VAL_FRACTION = 0.5  # REES46 has ~260 targets: a 20 % split would report on ~30


def grid(base: Personalization) -> list[Personalization]:
    """Every (α_max, n₀, H) combination on top of ``base``'s other fields."""
    return [base.model_copy(update={"alpha_max": a, "n0": n, "half_life_s": h})
            for a, n, h in itertools.product(ALPHA_MAX, N0, HALF_LIFE_S)]


def tune(settings: Settings, version: str, events: Path | None = None, retrieval: Retrieval = "hybrid") -> dict:
    """{"grid": [tuning-user rows], "chosen": params, "default": params, "report": {default, chosen} on
    held-out users}, all ranked with ``retrieval`` as served."""
    registry, cache = ModelRegistry(settings.models_dir), settings.data_dir / "eval_cache"
    default = settings.personalization
    candidates = grid(default)
    rows = evaluate_rees46_grid(registry, version, candidates, cache, events,
                                users=lambda u: split_of(u, USER_VAL_FRACTION) == "train", retrieval=retrieval,
                                lexical=settings.lexical)
    best = max(range(len(candidates)), key=lambda i: (rows[i]["personalized_hit@10"], rows[i]["personalized_mrr@10"]))
    chosen = candidates[best]
    held_out = evaluate_rees46_grid(registry, version, [default, chosen], cache, events,
                                    users=lambda u: split_of(u, USER_VAL_FRACTION) == "val", retrieval=retrieval,
                                    lexical=settings.lexical)
    keys = ("alpha_max", "n0", "half_life_s")
    return {"version": version, "retrieval": retrieval,
            "grid": [{**{k: getattr(p, k) for k in keys}, **r} for p, r in zip(candidates, rows)],
            "default": {k: getattr(default, k) for k in keys}, "chosen": {k: getattr(chosen, k) for k in keys},
            "report": {"default": held_out[0], "chosen": held_out[1]}}
