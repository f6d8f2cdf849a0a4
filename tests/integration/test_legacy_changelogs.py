"""Moving an earlier release's changelogs (JSON keys, placed by their hash) to raw keys placed beside their
source partitions, on the embedded broker (streams/legacy_changelogs.py)."""

from __future__ import annotations

import json
import uuid

import pytest
from kafka.admin import NewTopic
from kafka.partitioner.default import murmur2

from cartwise.kafka_io import admin_client, log_consumer, make_producer, partitions_of, read_topic
from cartwise.settings import Settings
from streams.app import LEGACY_TABLES
from streams.legacy_changelogs import migrate_changelogs

pytestmark = pytest.mark.integration
PARTITIONS = 4


def source_partition(key: bytes) -> int:
    """The partition the producers' default partitioner gives ``key`` (murmur2, as Kafka's Java client)."""
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def write_legacy(settings: Settings, table: str, rows: list[tuple[str, object | None]]) -> None:
    """``rows`` into ``table``'s changelog as the earlier release wrote them: JSON keys and values, each in
    the partition its JSON key hashes to."""
    topic = f"{settings.app_id}-{table}-changelog"
    admin = admin_client(settings, "test")
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()
    producer = make_producer(settings)
    try:
        for key, value in rows:
            encoded = json.dumps(key).encode()
            producer.send(topic, key=encoded, partition=source_partition(encoded),
                          value=None if value is None else json.dumps(value).encode())
        producer.flush()
    finally:
        producer.close()


def changelog(settings: Settings, table: str) -> list:
    consumer = log_consumer(settings)
    try:
        return read_topic(consumer, f"{settings.app_id}-{table}-changelog")[0]
    finally:
        consumer.close()


def topic_exists(settings: Settings, table: str) -> bool:
    consumer = log_consumer(settings)
    try:
        return bool(partitions_of(consumer, f"{settings.app_id}-{table}-changelog"))
    finally:
        consumer.close()


def test_legacy_histories_move_beside_their_sources_once(broker, tmp_path):
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=broker.bootstrap, kafka_idempotence=False,
                        app_id=f"legacy-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS)
    users = [str(502372361 + i) for i in range(40)]
    rows = [(u, f'{{"events": [{i}]}}') for i, u in enumerate(users)]
    write_legacy(settings, "user_history", rows[:20] + [(users[0], '{"events": []}'), (users[1], None)] + rows[20:])
    assert any(source_partition(json.dumps(u).encode()) != source_partition(u.encode()) for u in users)

    assert migrate_changelogs(settings, LEGACY_TABLES) == {"user_histories": len(users) - 1}
    moved = changelog(settings, "user_histories")
    assert all(r.partition == source_partition(r.key) for r in moved)
    newest = {r.key.decode(): json.loads(r.value) for r in moved}
    expected = dict(rows) | {users[0]: '{"events": []}'}
    del expected[users[1]]  # erased before the migration: not copied
    assert newest == expected
    assert not topic_exists(settings, "user_history")

    assert migrate_changelogs(settings, LEGACY_TABLES) == {}  # already moved: nothing copied again
    assert len(changelog(settings, "user_histories")) == len(moved)
