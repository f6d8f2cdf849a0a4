"""Moving the Tables' changelogs of an earlier release (JSON-encoded keys) to today's (raw keys).

faust restores to each worker the changelog partitions numbered like the source partitions it owns, and
the producer picks a changelog record's partition by hashing its serialized key. The earlier Tables
serialized keys as JSON (``"502372361"``, quotes included), which hashes to another partition than the
source topics' raw key (user 502372361: source partition 0, changelog partition 3). With one worker that
owns every partition nothing showed; with several, a worker restored other workers' users and started the
histories of its own from nothing. Today's Tables (streams/app.py) use raw keys under new names, and a
worker that finds an old changelog and no new one copies the newest value of every key across (values are
encoded as before), then deletes the old topic, so an erased user's history does not outlive the erasure
there."""

from __future__ import annotations

import json
import logging

from kafka.admin import NewTopic
from kafka.errors import KafkaError, UnknownTopicOrPartitionError

from cartwise.kafka_io import admin_client, fetched_highwaters, log_consumer, make_producer, partitions_of
from cartwise.settings import Settings
from streams.table_recovery import newest_records

log = logging.getLogger(__name__)
HIGHWATER_TIMEOUT_S = 30.0


def migrate_changelogs(settings: Settings, renames: dict[str, str]) -> dict[str, int]:
    """For each (old Table name -> new name) in ``renames``: when the old changelog topic exists and the new
    one is empty or missing, write the old one's newest value of every key (tombstones dropped) to the new
    one keyed by the decoded raw key, and delete the old topic. Returns new name -> keys copied (only the
    Tables migrated). Blocking; run it before the worker's faust app starts. Raises
    kafka.errors.KafkaError."""
    copied = {}
    for old, new in renames.items():
        old_topic, new_topic = (f"{settings.app_id}-{name}-changelog" for name in (old, new))
        if _has_records(settings, old_topic) and not _has_records(settings, new_topic):
            copied[new] = _copy(settings, old_topic, new_topic)
            log.info("%s: %d keys moved from %s (raw keys)", new_topic, copied[new], old_topic)
        if _exists(settings, old_topic):
            _delete(settings, old_topic)
    return copied


def _exists(settings: Settings, topic: str) -> bool:
    consumer = log_consumer(settings)
    try:
        return bool(partitions_of(consumer, topic))
    finally:
        consumer.close()


def _has_records(settings: Settings, topic: str) -> bool:
    consumer = log_consumer(settings)
    try:
        partitions = partitions_of(consumer, topic)
        return bool(partitions) and any(fetched_highwaters(consumer, dict.fromkeys(partitions, 0),
                                                           HIGHWATER_TIMEOUT_S).values())
    finally:
        consumer.close()


def _copy(settings: Settings, old_topic: str, new_topic: str) -> int:
    consumer = log_consumer(settings)
    try:
        starts = {tp.partition: 0 for tp in partitions_of(consumer, old_topic)}
    finally:
        consumer.close()
    newest = newest_records(settings, old_topic, starts)
    _create_compacted(settings, new_topic)
    producer = make_producer(settings)
    try:
        kept = {json.loads(key): value for key, value in newest.items() if value is not None}
        for key, value in kept.items():
            producer.send(new_topic, key=key.encode(), value=value)
        producer.flush()
    finally:
        producer.close()
    return len(kept)


def _create_compacted(settings: Settings, topic: str) -> None:
    """The topic as faust would create a Table's changelog (compacted, one partition per source partition);
    an existing one is kept."""
    admin = admin_client(settings, "cartwise-migration")
    try:
        if topic not in set(admin.list_topics()):
            admin.create_topics([NewTopic(topic, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()


def _delete(settings: Settings, topic: str) -> None:
    admin = admin_client(settings, "cartwise-migration")
    try:
        admin.delete_topics([topic])
    except UnknownTopicOrPartitionError:
        pass
    except KafkaError as exc:  # the copy is done; a broker that cannot delete topics keeps the old one
        log.warning("%s: not deleted (%s); it holds the histories of before the migration", topic, exc)
    finally:
        admin.close()
