"""Retraining cycles: ``cartwise trainer cycle`` (one, for cron) and ``cartwise trainer run --every``.

A cycle: behavior events since the active version's watermark -> mine -> train (trainer.incremental)
-> publish (and its int8 copy, with ``encoder_precision`` int8; and a version with a query tower distilled
from it, with ``query_tower_layers`` > 0) -> quality gate -> swap: a candidate that passes is requested on
``models.updates`` and the stream worker's swap coordinator backfills and activates it
(streams/swap.py); one that fails stays a candidate with the gate's reason, and nothing else changes.
A file lock keeps two cycles from overlapping; any failure leaves the active version as it was."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from cartwise.lifecycle import HELD, ModelUpdate, publish_update, request_swap
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from encoders.quantize import served_copy
from trainer.config import TrainConfig
from trainer.distill import DistillConfig
from trainer.gate import Verdict, gate_metrics, quality_gate
from trainer.incremental import NothingToTrain, train_from_kafka
from trainer.query_tower import publish_distilled

log = logging.getLogger(__name__)
LOCK_FILE = "trainer.lock"


class CycleBusy(RuntimeError):
    """Another cycle holds the trainer lock."""


@dataclass
class CycleResult:
    """What a cycle did: the candidate it published (if any), the gate's verdict, whether a swap to it was
    requested on models.updates."""

    candidate: str | None
    verdict: Verdict | None
    swap_requested: bool
    skipped: str | None = None
    query_tower: str = ""  # what the candidate embeds queries with


def run_cycle(settings: Settings, config: TrainConfig, margin: float = 0.01, judgments: Path | None = None,
              products: Path | None = None) -> CycleResult:
    """One cycle (module docstring); nothing new since the watermark gives a skipped result. Raises
    CycleBusy when another cycle is running, kafka.errors.KafkaError when no broker answers."""

    lock = FileLock(settings.data_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise CycleBusy(f"another trainer cycle holds {settings.data_dir / LOCK_FILE}") from None
    try:
        registry = ModelRegistry(settings.models_dir)
        try:
            outcome = train_from_kafka(settings, config)
        except NothingToTrain as err:
            return CycleResult(None, None, False, skipped=str(err))
        # The gate scores what would be served: with int8 serving, the int8 copy of what was trained, and
        # with CARTWISE_QUERY_TOWER_LAYERS its query tower distilled again from the new encoder.
        candidate = served_copy(registry, outcome.manifest.version, settings.encoder_precision)
        if settings.query_tower_layers:
            distilled = publish_distilled(settings, candidate, DistillConfig(layers=settings.query_tower_layers))
            candidate = distilled.version
        log.info("cycle: %s serves queries with %s", candidate, _query_tower(settings))
        active = registry.active()
        verdict = quality_gate(gate_metrics(settings, candidate, judgments, products),
                               gate_metrics(settings, active, judgments, products) if active else None, margin)
        if verdict.passed:
            request_swap(settings, candidate, verdict.reason, previous=active)
        else:
            registry.hold(candidate, verdict.reason)
            publish_update(settings, ModelUpdate(kind=HELD, version=candidate, previous=active, reason=verdict.reason))
        log.info("cycle: %s %s (%s)", candidate, "swap requested" if verdict.passed else "held", verdict.reason)
        return CycleResult(candidate, verdict, verdict.passed, query_tower=_query_tower(settings))
    finally:
        lock.release()


def _query_tower(settings: Settings) -> str:
    if settings.query_tower_layers:
        return f"a {settings.query_tower_layers}-layer query tower distilled from the new encoder"
    return "the full encoder (no distilled query tower: CARTWISE_QUERY_TOWER_LAYERS=0)"


def run_every(settings: Settings, config: TrainConfig, every_s: float, margin: float,
              stop: threading.Event | None = None) -> None:
    """Run a cycle every ``every_s`` seconds until ``stop`` is set; a failed cycle is logged and the
    next one runs on schedule (the active version keeps serving)."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            result = run_cycle(settings, config, margin)
            log.info("cycle done: %s", result)
        except Exception:  # noqa: BLE001 - a scheduler outlives a failed cycle by design
            log.exception("trainer cycle failed; the active version is unchanged")
        stop.wait(every_s)


def parse_duration(text: str) -> float:
    """Seconds in "90s", "15m", "6h", "1d" (or a bare number of seconds). Raises ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 6h, 1d)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
