"""Incremental training cycles against the real embedded broker: REES46 events replayed into Kafka, read
back with kafka-python manual assignment from a watermark, trained with MMSE stages and published with
the new watermark; a second cycle with nothing new refuses, a third continues from the second."""

from __future__ import annotations

import shutil

import pytest
from portpicker import pick_unused_port

from cartwise.app.broker import EmbeddedBroker
from cartwise.app.replay import replay
from cartwise.datasets import rees46_records
from cartwise.kafka_io import ensure_topics, log_consumer, make_producer, read_topic
from cartwise.lifecycle import HELD, SWAP_REQUESTED, ModelUpdate
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from trainer.config import TrainConfig
from trainer.incremental import NothingToTrain, Watermark, train_from_kafka

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRST, SECOND = 3000, 4500
CONFIG = TrainConfig(steps=4, batch_size=8, val_every=2, warmup_steps=1, patience=10)


@pytest.fixture(scope="module")
def settings(tmp_path_factory, registry_dir):
    data_dir = tmp_path_factory.mktemp("incremental")
    shutil.copytree(registry_dir, data_dir / "models")
    port = pick_unused_port()
    with EmbeddedBroker(port, data_dir / "broker.log"):
        settings = Settings(data_dir=data_dir, embedded_kafka_port=port)  # the broker this test started
        ensure_topics(settings)
        yield settings


def behavior_count(records) -> int:
    return sum(r.topic_field != "catalog" for r in records)


def test_cycles_follow_the_watermark(settings):
    records = list(rees46_records(limit=SECOND))
    producer = make_producer(settings)
    replay(records[:FIRST], producer, settings.topics)
    registry = ModelRegistry(settings.models_dir)

    first = train_from_kafka(settings, CONFIG)
    manifest = first.manifest
    assert manifest.config["init"] == "v1" and manifest.config["loss"] == "mmse"
    assert manifest.config["behavior_events"] == behavior_count(records[:FIRST])
    watermark = Watermark.parse(manifest.config["watermark"])
    assert sum(o for parts in watermark.offsets.values() for o in parts.values()) == behavior_count(records[:FIRST])
    assert 0.0 <= first.val_metrics["ndcg@10"] <= 1.0
    registry.activate(manifest.version)

    with pytest.raises(NothingToTrain, match="nothing new"):
        train_from_kafka(settings, CONFIG, publish=False)

    replay(records[FIRST:], producer, settings.topics)
    producer.close()
    second = train_from_kafka(settings, CONFIG)
    assert second.manifest.config["init"] == manifest.version
    assert second.manifest.config["behavior_events"] == behavior_count(records[FIRST:])


def test_since_accepts_a_time_and_rejects_garbage():
    assert Watermark.parse("2019-10-01T01:00:00+00:00").hour == 1
    assert Watermark.parse(None) is None
    with pytest.raises(ValueError, match="--since"):
        Watermark.parse("yesterday")


def models_updates(settings) -> list[ModelUpdate]:
    consumer = log_consumer(settings)
    try:
        return [ModelUpdate.decode(r.value) for r in read_topic(consumer, settings.topics.models_updates)[0]]
    finally:
        consumer.close()


def test_cycle_gates_the_candidate(settings, slice_files):
    """After test_cycles_follow_the_watermark: the active version's watermark leaves new events to train on.
    A gate no candidate can pass holds it with the reason, announces ``held`` and changes nothing; a
    lenient one requests the swap on models.updates (the service's coordinator carries it out:
    tests/integration/test_swap.py)."""
    from trainer.cycle import run_cycle

    registry = ModelRegistry(settings.models_dir)
    before = registry.active()
    held = run_cycle(settings, CONFIG, margin=-1.0, judgments=slice_files.judgments, products=slice_files.products)
    assert not held.swap_requested and registry.active() == before
    assert registry.state(held.candidate) == ("candidate", held.verdict.reason)
    assert held.verdict.reason.startswith("gate failed: ndcg@10")
    assert [(u.kind, u.version) for u in models_updates(settings)] == [(HELD, held.candidate)]

    passed = run_cycle(settings, CONFIG, margin=1.0, judgments=slice_files.judgments, products=slice_files.products)
    assert passed.swap_requested and registry.active() == before
    # int8 serving (the default): the gate scored, and the swap asks for, the int8 copy of what was trained
    assert registry.manifest(passed.candidate).config["quantized_from"] != before
    assert [(u.kind, u.version) for u in models_updates(settings)][-1] == (SWAP_REQUESTED, passed.candidate)
