"""``cartwise train``: data -> miner -> training loop -> full validation -> registry version."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cartwise.settings import Settings
from trainer.assembly import (
    TrainOutcome,
    homedepot_watermark,
    make_miner,
    publish_trained,
    setup_homedepot,
    validate_full,
)
from trainer.config import TrainConfig
from trainer.evaluation.metrics import scalar_metrics
from trainer.loop import Trainer
from trainer.plots import plot_run

log = logging.getLogger(__name__)


def train_homedepot(settings: Settings, config: TrainConfig, run_name: str | None = None, resume: bool = False,
                    publish: bool = True, init_version: str | None = None, judgments: Path | None = None,
                    products: Path | None = None) -> TrainOutcome:
    """Train on the Home Depot train split (validation split held out), validate on the whole
    validation split over the whole catalog, and publish a registry version (unless ``publish`` is
    False). ``init_version`` continues from a registry version's weights instead of the pretrained."""
    from trainer.taxonomy.assign import assignment_path, read_assignments

    started = time.perf_counter()
    setup = setup_homedepot(settings, config, init_version, judgments, products)
    paths = None
    if config.negatives == "tbhns":
        assigned = read_assignments(assignment_path(settings.data_dir, "homedepot"))
        paths = [assigned.get(pid, []) for pid in setup.ids]
    miner = make_miner(config, setup.texts, setup.train, paths)
    validator = setup.validator(config.val_queries, config.val_distractors, config.seed)
    run_dir = settings.data_dir / "runs" / (run_name or f"homedepot-{config.negatives}")
    result = Trainer(config, setup.encoder, setup.train, validator, miner, run_dir).fit(resume)
    plot_run(result.to_json(), run_dir / "curves.png")
    log.info("scoring the whole validation split over the whole catalog")
    val_metrics = validate_full(setup)
    manifest = publish_trained(
        settings, setup.model, config, init_version,
        {"homedepot_val": scalar_metrics(val_metrics), "best_step": result.best_step},
        watermark=homedepot_watermark(judgments), train_queries=len(setup.train), val_queries=len(setup.val),
    ) if publish else None
    return TrainOutcome(result, val_metrics, manifest, time.perf_counter() - started)
