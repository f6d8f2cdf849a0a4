"""Completing faust's Table recovery on brokers whose listed end offsets lag the log.

faust restores a Table by reading its changelog up to the end offset the broker lists. The embedded Tansu
broker lists a stale end on its S3 engine (it stayed at 1 while batches were appended, measured here) and
the last batch's base offset on its memory engine, so a worker restarted on a durable embedded broker
restored stale user histories and then built on them: events applied before the restart vanished from
histories and vectors (found by ``cartwise bench recovery``). After faust's recovery, and before the
streams resume, the changelog is read on from where faust's recovery stopped (or the store's persisted
offset: streams/table_store.py keeps Table state on disk between restarts) to its true end
(cartwise.kafka_io.iter_chunks stops at the high watermark the fetch responses report, not at the listed
end) and the newest value of every key of this worker's partitions goes into the Table's store directly:
the changelog already holds it, so nothing is logged again. Against Apache Kafka this reads nothing new."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable, NamedTuple

from kafka import TopicPartition

from cartwise.kafka_io import iter_chunks, log_consumer
from cartwise.settings import Settings

log = logging.getLogger(__name__)


def newest_records(settings: Settings, topic: str, starts: dict[int, int]) -> dict[bytes, bytes | None]:
    """The newest value (None for a tombstone) of every key in ``topic`` from ``starts`` (partition ->
    offset, only these partitions), as stored. Blocking; raises kafka.errors.KafkaError."""
    consumer = log_consumer(settings)
    newest: dict[bytes, bytes | None] = {}
    try:
        for records, _ in iter_chunks(consumer, topic, starts, only=set(starts)):
            for record in records:
                newest[record.key] = record.value
    finally:
        consumer.close()
    return newest


def changelog_values(settings: Settings, topic: str, starts: dict[int, int]) -> dict:
    """:func:`newest_records` of a Table's changelog decoded as the Tables of streams/app.py write them:
    raw str keys, JSON values."""
    return {key.decode(): None if value is None else json.loads(value)
            for key, value in newest_records(settings, topic, starts).items()}


class Tail(NamedTuple):
    """A changelog partition read on from an offset: the newest raw value of every key (None: a tombstone),
    the offset after the last record read, and the partition's end (its high watermark)."""

    newest: dict[bytes, bytes | None]
    read_to: int
    end: int


def changelog_tail(settings: Settings, topic: str, starts: dict[int, int]) -> dict[int, Tail]:
    """Each partition's :class:`Tail` of ``topic`` from ``starts`` (partition -> offset, only these
    partitions). Blocking; raises kafka.errors.KafkaError."""
    consumer = log_consumer(settings)
    newest: dict[int, dict[bytes, bytes | None]] = {p: {} for p in starts}
    read_to = dict(starts)
    try:
        for records, positions in iter_chunks(consumer, topic, starts, only=set(starts)):
            for record in records:
                newest[record.partition][record.key] = record.value
            read_to.update(positions)
        ends = {p: consumer.highwater(TopicPartition(topic, p)) for p in starts}
    finally:
        consumer.close()
    return {p: Tail(newest[p], read_to[p], starts[p] if ends[p] is None else ends[p]) for p in starts}


def complete_recovery_of(table, settings: Settings, then: Callable[[], Awaitable[None]] | None = None) -> None:
    """Register the completion (module doc) as ``table``'s on_recover callback (a faust Table with
    streams/table_store.py's store), followed by ``then``: faust keeps a Table's callbacks in a set and runs
    them in no fixed order, so anything that reads the recovered Table must run after the completion, in
    the same callback.

    A store that holds a changelog offset at or beyond the partition's end describes a log that is gone (a
    broker that lost or replaced it): that partition is wiped and read again from its start."""

    async def complete() -> None:
        topic, store = table.changelog_topic.get_topic_name(), table.data
        # faust applied every record up to the high watermark it read to (the listed end - 1), and the store
        # holds every record up to its persisted offset; records faust may have fetched beyond both are
        # read again here rather than trusted
        read_to = table.app.tables.recovery.active_highwaters
        held = {tp.partition: max(-1 if read_to.get(tp) is None else read_to[tp],
                                  -1 if store.persisted_offset(tp) is None else store.persisted_offset(tp))
                for tp in table.app.consumer.assignment() if tp.topic == topic}
        tails = await asyncio.to_thread(changelog_tail, settings, topic, {p: o + 1 for p, o in held.items()})
        gone = [p for p, tail in tails.items() if tail.end <= held[p]]
        if gone:
            log.warning("%s%s: the local Table state is ahead of the changelog's end: read again from the start",
                        topic, gone)
            for partition in gone:
                store.wipe(partition)
            tails.update(await asyncio.to_thread(changelog_tail, settings, topic, dict.fromkeys(gone, 0)))
        changed = 0
        for partition, tail in tails.items():
            for key, value in tail.newest.items():
                key, value = store.decode_key(key), None if value is None else store.decode_value(value)
                if store.data.get(key) != value:
                    changed += 1
                    if value is None:
                        store.data.pop(key, None)
                    else:
                        store.data[key] = value
            if tail.newest:
                store.acknowledged(partition, list(tail.newest.items()), tail.read_to - 1)
        log.info("%s: %d keys restored from the changelog's tail beyond the listed end", topic, changed)
        if then is not None:
            await then()

    table.on_recover(complete)
