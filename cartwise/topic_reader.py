"""Reading a topic from given offsets to its current end with kafka-python and manual assignment.

Used by the trainer (events since a watermark) and by the swap coordinator (the catalog from its
beginning). Manual assignment because the embedded broker serves no kafka-python consumer groups, and
neither reader should join the stream worker's group."""

from __future__ import annotations

from typing import Iterator

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord


def partitions_of(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, sorted (empty for an unknown topic)."""
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


def iter_chunks(consumer: KafkaConsumer, topic: str, starts: dict[int, int] | None = None,
                max_records: int = 500) -> Iterator[tuple[list[ConsumerRecord], dict[int, int]]]:
    """Records of ``topic`` from ``starts`` (partition -> offset; missing: 0) to the end as of the call,
    in chunks of at most ``max_records``, each with the next offset per partition after it.

    The end is where a poll comes back empty after every partition reached its listed end offset:
    the embedded Tansu broker lists the last batch's base offset as the end, not the high watermark,
    so the listed end alone would drop the last batch."""
    partitions = partitions_of(consumer, topic)
    if not partitions:
        return
    consumer.assign(partitions)
    listed_end = consumer.end_offsets(partitions)
    for tp in partitions:
        consumer.seek(tp, (starts or {}).get(tp.partition, 0))
    polled = True
    while polled or any(consumer.position(tp) < listed_end[tp] for tp in partitions):
        batches = consumer.poll(timeout_ms=500, max_records=max_records)
        polled = any(batches.values())
        if polled:
            yield [r for batch in batches.values() for r in batch], {tp.partition: consumer.position(tp)
                                                                       for tp in partitions}


def read_topic(consumer: KafkaConsumer, topic: str, starts: dict[int, int] | None = None
               ) -> tuple[list[ConsumerRecord], dict[int, int]]:
    """Every record of ``topic`` from ``starts`` to the current end, and the next offset per partition."""
    records = [r for chunk, _ in iter_chunks(consumer, topic, starts) for r in chunk]
    return records, {tp.partition: consumer.position(tp) for tp in partitions_of(consumer, topic)}


def log_consumer(bootstrap: str) -> KafkaConsumer:
    """A group-less kafka-python consumer for reading topics by offset."""
    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                         consumer_timeout_ms=1000)
