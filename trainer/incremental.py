"""Incremental training cycles from the event log: ``cartwise train --from-kafka --since WATERMARK``.

Reads the behavior events produced since a watermark (kafka-python with manual partition assignment:
the embedded broker serves no kafka-python consumer groups, and a trainer should not join the
worker's group anyway), joins the current catalog (the catalog topic read from the beginning, latest
event per product), turns each (user, query) into MMSE stages (purchase 4 > cart 3 > view 2 > shown 1 >
random; "shown": the other products of the answer an event names by its request_id, from the impressions
topic, in training groups only), re-mines TB-HNS negatives on the catalog's own category tree, continues training from the active
registry version, and publishes a version whose manifest records the new watermark.

The query of an event is the search that led to it when the event carries one (its own ``query``, else
that of the answer its ``request_id`` names), else its product's leaf category (the REES46 protocol of trainer.evaluation.rees46)."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial

import torch
from kafka import KafkaConsumer

from cartwise.catalog import event_lexical_text, event_product_text
from cartwise.events import (
    BehaviorEvent,
    Impression,
    InvalidEvent,
    ProductUpsert,
    parse_behavior_event,
    parse_catalog_event,
    parse_control_event,
    parse_impression,
    parse_record,
)
from cartwise.kafka_io import log_consumer, partitions_of, read_topic
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from trainer.assembly import TrainOutcome, build_encoder, make_miner, publish_trained
from trainer.config import TrainConfig
from trainer.data import LabeledQuery, split_queries
from trainer.evaluation.metrics import scalar_metrics
from trainer.lexical_scores import LexicalScores
from trainer.loop import Trainer
from trainer.plots import plot_run
from trainer.validation import Validator

log = logging.getLogger(__name__)
STAGES = {"purchase": 4.0, "cart": 3.0, "view": 2.0, "shown": 1.0}  # shown: in the answer acted on, not taken
BEHAVIOR_DEFAULTS = {"loss": "mmse", "roar_weight": 1.0, "positive_grade": 3.0, "exclude_grade": 2.0,
                     "negatives": "tbhns", "curriculum_steps": 0}


class NothingToTrain(RuntimeError):
    """The events since the watermark give no (user, query) group to train or validate on."""


@dataclass
class Watermark:
    """Where a cycle stopped: next offset per topic partition, and the newest event time seen."""

    offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    event_time: str | None = None

    def to_json(self) -> dict:
        """JSON-ready form stored in the manifest's config."""
        return {"source": "kafka", "offsets": {t: {str(p): o for p, o in parts.items()} for t, parts in self.offsets.items()},
                "event_time": self.event_time}

    @classmethod
    def parse(cls, value: dict | str | None) -> "Watermark | datetime | None":
        """A watermark dict/JSON, an ISO time (events at or after it), or None (from the beginning).

        Raises ValueError for anything else."""
        if value is None or isinstance(value, dict):
            return None if not value or value.get("source") != "kafka" else \
                cls({t: {int(p): o for p, o in parts.items()} for t, parts in value["offsets"].items()}, value["event_time"])
        value = value.strip()
        if value.startswith("{"):
            return cls.parse(json.loads(value))
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"--since must be a watermark JSON or an ISO time, got {value!r}") from None


def start_offsets(consumer: KafkaConsumer, topic: str, since: "Watermark | datetime | None") -> dict[int, int]:
    """Where reading ``topic`` from ``since`` starts, per partition (a time past the end gives the end)."""
    partitions = partitions_of(consumer, topic)
    if isinstance(since, Watermark):
        return {tp.partition: since.offsets.get(topic, {}).get(tp.partition, 0) for tp in partitions}
    if isinstance(since, datetime):
        found = consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
        ends = consumer.end_offsets(partitions)
        return {tp.partition: found[tp].offset if found.get(tp) else ends[tp] for tp in partitions}
    return {}


def warn_if_expired(topic: str, starts: dict[int, int], records: list) -> None:
    """Log a warning for each partition of ``topic`` whose first record read lies past where the watermark
    said to start: retention (``CARTWISE_RETENTION_S``) removed events this cycle never trained on."""
    first: dict[int, int] = {}
    for record in records:
        first.setdefault(record.partition, record.offset)
    for partition, start in starts.items():
        if first.get(partition, start) > start:
            log.warning("%s[%d]: the watermark is at offset %d but the first kept record is %d: %d events expired "
                        "before a cycle read them (retention: CARTWISE_RETENTION_S)", topic, partition, start,
                        first[partition], first[partition] - start)


@dataclass
class EventLog:
    """The current catalog, the behavior events since the watermark, and the watermark after them."""

    catalog: dict[str, ProductUpsert]
    behavior: list[BehaviorEvent]
    watermark: Watermark
    invalid: int = 0
    impressions: dict[str, Impression] = field(default_factory=dict)  # request_id -> the answer an event names


_NEVER = datetime.min.replace(tzinfo=timezone.utc)


def erasure_times(consumer: KafkaConsumer, settings: Settings) -> dict[str, datetime]:
    """user_id -> time of the user's newest erasure request on the user control topic: their events up to
    then must not be trained on (they stay in the behavior topics until retention removes them)."""
    times: dict[str, datetime] = {}
    for record in read_topic(consumer, settings.topics.user_control, None)[0]:
        try:
            request = parse_record(record.key, record.value, parse_control_event, settings.event_limits)
        except InvalidEvent:
            continue
        times[request.user_id] = max(request.event_time, times.get(request.user_id, _NEVER))
    return times


def read_event_log(settings: Settings, since: "Watermark | datetime | None") -> EventLog:
    """Read the catalog from the beginning and the behavior topics from ``since``. Invalid events are
    counted and skipped (the stream worker has already dead-lettered them); events of users who asked to
    be forgotten, up to their request, and events with an ``origin`` (the playground's) are left out.

    Raises kafka.errors.KafkaError (NoBrokersAvailable when no broker answers at ``settings.bootstrap``)."""
    topics, consumer = settings.topics, log_consumer(settings)
    try:
        catalog, invalid = {}, 0
        records, _ = read_topic(consumer, topics.catalog, None)
        for record in records:
            try:
                event = parse_record(record.key, record.value, parse_catalog_event, settings.event_limits)
            except InvalidEvent:
                invalid += 1
                continue
            if isinstance(event, ProductUpsert):
                catalog[event.product_id] = event
            else:
                catalog.pop(event.product_id, None)
        behavior, watermark = [], Watermark()
        for topic, event_type in zip(topics.behavior, ("purchase", "cart", "view")):
            starts = start_offsets(consumer, topic, since)
            records, end = read_topic(consumer, topic, starts)
            if isinstance(since, Watermark):
                warn_if_expired(topic, starts, records)
            watermark.offsets[topic] = end
            for record in records:
                try:
                    behavior.append(parse_record(record.key, record.value,
                                                 partial(parse_behavior_event, expected_type=event_type),
                                                 settings.event_limits))
                except InvalidEvent:
                    invalid += 1
        forgotten = erasure_times(consumer, settings)
        # a shopper's own events only: not those of users who asked to be forgotten, nor the playground's
        behavior = [e for e in behavior if e.origin is None and e.event_time > forgotten.get(e.user_id, _NEVER)]
        impressions = read_impressions(consumer, settings, since, {e.request_id for e in behavior}, watermark)
    finally:
        consumer.close()
    behavior.sort(key=lambda e: e.event_time)
    if behavior:
        watermark.event_time = behavior[-1].event_time.isoformat()
    return EventLog(catalog, behavior, watermark, invalid, impressions)


def read_impressions(consumer: KafkaConsumer, settings: Settings, since: "Watermark | datetime | None",
                     wanted: set[str | None], watermark: Watermark) -> dict[str, Impression]:
    """request_id -> Impression of the answers in ``wanted`` (the request ids behavior events carry), read
    from ``since`` on the impressions topic, whose end goes into ``watermark``. An answer given before the
    watermark and acted on after it is not found: its event trains without a shown stage."""
    topic = settings.topics.impressions
    records, watermark.offsets[topic] = read_topic(consumer, topic, start_offsets(consumer, topic, since))
    found = {}
    for record in records:
        try:
            impression = parse_record(record.key, record.value, parse_impression, settings.event_limits)
        except InvalidEvent:
            continue  # the API writes them; nothing to dead-letter
        if impression.request_id in wanted:
            found[impression.request_id] = impression
    return found


def event_query(event: BehaviorEvent, product: ProductUpsert, answer: Impression | None = None) -> str | None:
    """The query an event answers: its own search text, else the query of the answer it was made from,
    else its product's leaf category (None if none)."""
    if event.query:
        return event.query
    if answer is not None and answer.query:
        return answer.query
    return product.category_path[-1].replace("_", " ") if product.category_path else None


def behavior_queries(log_: EventLog, product_index: dict[str, int]) -> list[LabeledQuery]:
    """One labelled query per (user, query) with the strongest stage per product (MMSE stages): the stage
    of each event, and "shown" for the other products of the query's answer an event was made from."""
    groups: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for event in log_.behavior:
        product = log_.catalog.get(event.product_id)
        answer = log_.impressions.get(event.request_id) if event.request_id else None
        query = event_query(event, product, answer) if product else None
        if query is None:
            continue
        judged = groups[(event.user_id, query)]
        shown = answer.product_ids if answer is not None and answer.query == query else ()
        for index in (product_index[p] for p in shown if p in product_index):
            judged[index] = max(judged.get(index, 0.0), STAGES["shown"])
        index = product_index[event.product_id]
        judged[index] = max(judged.get(index, 0.0), STAGES[event.event_type])
    return [LabeledQuery(query, judged) for (_, query), judged in groups.items()]


def behavior_config(config: TrainConfig) -> TrainConfig:
    """``config`` with the behavior defaults (MMSE, stage grades) under every field the caller set."""
    chosen = config.model_dump(exclude_defaults=True, exclude={"dataset"})
    return TrainConfig.model_validate({**config.model_dump(), **BEHAVIOR_DEFAULTS, **chosen, "dataset": "kafka"})


def train_from_kafka(settings: Settings, config: TrainConfig, since: str | None = None,
                     publish: bool = True) -> TrainOutcome:
    """One incremental cycle (module docstring). ``since`` None continues from the active version's
    watermark. Raises NothingToTrain when there is nothing new to train on, kafka.errors.KafkaError when
    no broker answers at ``settings.bootstrap`` (the configured one, else a running `cartwise serve`'s)."""
    started = time.perf_counter()
    registry = ModelRegistry(settings.models_dir)
    active = registry.active()
    since_mark = Watermark.parse(since if since is not None else
                                 (registry.manifest(active).config.get("watermark") if active else None))
    event_log = read_event_log(settings, since_mark)
    config = behavior_config(config)
    ids = list(event_log.catalog)
    texts = [event_product_text(event_log.catalog[pid]) for pid in ids]
    train, val = split_queries(behavior_queries(event_log, {pid: i for i, pid in enumerate(ids)}), config.val_fraction)
    val = [q.graded_at_least(STAGES["view"]) for q in val]  # shown and not taken is no gain in nDCG
    if not any(q.positives(config.positive_grade) for q in train) or not val:
        raise NothingToTrain(f"nothing new to train on since {since_mark!r}: {len(event_log.behavior)} behavior "
                         f"events, {len(train)} train and {len(val)} validation (user, query) groups")
    torch.manual_seed(config.seed)
    encoder = build_encoder(settings, config, texts, active)
    paths = [list(event_log.catalog[pid].category_path) for pid in ids]
    miner = make_miner(config, texts, train, paths)
    validator = Validator.sample(val, len(ids), None, len(ids), config.seed)
    if config.selection == "hybrid":
        lexical = LexicalScores(settings.lexical, [event_lexical_text(event_log.catalog[pid]) for pid in ids])
        validator = validator.hybrid(lexical)
    run_dir = settings.data_dir / "runs" / "kafka"
    result = Trainer(config, encoder, train, validator, miner, run_dir).fit()
    plot_run(result.to_json(), run_dir / "curves.png")
    # the validator scores every validation group over the whole catalog: its figure at the best step
    # (whose weights the model now holds) is the final one
    val_metrics = next(p.metrics for p in result.history if p.step == result.best_step)
    log.info("cycle on %d behavior events: val nDCG@10 %.4f", len(event_log.behavior), val_metrics["ndcg@10"])
    manifest = publish_trained(
        settings, encoder.model, config, active,
        {"behavior_val": scalar_metrics(val_metrics), "best_step": result.best_step},
        watermark=event_log.watermark.to_json(), behavior_events=len(event_log.behavior),
        invalid_events=event_log.invalid,
    ) if publish else None
    return TrainOutcome(result, val_metrics, manifest, time.perf_counter() - started)
