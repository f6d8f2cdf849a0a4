"""Completing faust's Table recovery on brokers whose listed end offsets lag the log.

faust restores a Table by reading its changelog up to the end offset the broker lists. The embedded Tansu
broker lists a stale end on its S3 engine (it stayed at 1 while batches were appended, measured here) and
the last batch's base offset on its memory engine, so a worker restarted on a durable embedded broker
restored stale user histories and then built on them: events applied before the restart vanished from
histories and vectors (found by ``cartwise bench recovery``). After faust's recovery, and before the
streams resume, the changelog is read on from where faust's recovery stopped to its true end
(cartwise.kafka_io.iter_chunks stops at the high watermark the fetch responses report, not at the listed
end) and the newest value of every key of this worker's partitions goes into the Table's store directly:
the changelog already holds it, so nothing is logged again. Against Apache Kafka this reads nothing new."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

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


def complete_recovery_of(table, settings: Settings, then: Callable[[], Awaitable[None]] | None = None) -> None:
    """Register the completion (module doc) as ``table``'s on_recover callback (a faust Table), followed by
    ``then``: faust keeps a Table's callbacks in a set and runs them in no fixed order, so anything that
    reads the recovered Table must run after the completion, in the same callback."""

    async def complete() -> None:
        topic = table.changelog_topic.get_topic_name()
        # faust applied every record up to the high watermark it read to (the listed end - 1); records it
        # may have fetched beyond are read again here rather than trusted
        read_to = table.app.tables.recovery.active_highwaters
        starts = {tp.partition: max(0, read_to[tp] + 1) if read_to.get(tp) is not None else 0
                  for tp in table.app.consumer.assignment() if tp.topic == topic}
        values = await asyncio.to_thread(changelog_values, settings, topic, starts)
        changed = 0
        for key, value in values.items():
            if table.data.get(key) != value:
                changed += 1
                if value is None:
                    table.data.pop(key, None)
                else:
                    table.data[key] = value
        log.info("%s: %d keys restored from the changelog's tail beyond the listed end", topic, changed)
        if then is not None:
            await then()

    table.on_recover(complete)
