"""The log maintenance under the real embedded broker (Tansu on s3rver): merged, compacted and expired logs
read back as Kafka clients expect (cartwise/app/log_maintenance.py)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from portpicker import pick_unused_port

from cartwise.app.broker import BUCKET, RAM_DIR, EmbeddedBroker, ObjectStore, embedded_broker
from cartwise.app.log_maintenance import LogMaintenance, StoreClient
from cartwise.kafka_io import log_consumer, read_topic
from cartwise.settings import Settings

pytestmark = pytest.mark.integration
GROUP = "cartwise"


@pytest.fixture
def disk_broker(tmp_path):
    """A durable embedded broker without its maintenance process: each test runs passes itself."""
    store = ObjectStore(tmp_path / "broker", pick_unused_port(), Settings().s3rver)
    with EmbeddedBroker(pick_unused_port(), tmp_path / "broker.log", store) as broker:
        yield broker, store


def maintenance(store: ObjectStore, retention_s: float = 3600.0, held: tuple[str, ...] = ()) -> LogMaintenance:
    return LogMaintenance(store.directory, BUCKET, StoreClient(store.port, BUCKET), GROUP, held, "catalog",
                          retention_s, merge_min_age_s=0.0, min_dirty_bytes=0)


def listed(store: ObjectStore, topic: str) -> int:
    """Batch objects of ``topic`` in s3rver's listings (a deleted one leaves them at once)."""
    return len(StoreClient(store.port, BUCKET).list_keys(f"clusters/tansu_cluster/topics/{topic}/"))


async def produce_batches(bootstrap: str, topic: str, batches: list[list[tuple[bytes, bytes | None]]]) -> None:
    """One produce request (one stored object) per inner list."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    try:
        for records in batches:
            for key, value in records:
                await producer.send(topic, value, key=key)
            await producer.flush()
    finally:
        await producer.stop()


async def read_from(bootstrap: str, topic: str, start: int | None) -> list[tuple[int, bytes, bytes | None]]:
    """Every record of partition 0 from ``start`` (None: the earliest offset ListOffsets gives) to the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
        out, deadline = [], time.monotonic() + 20
        # the end as fetches report it: Tansu's ListOffsets LATEST answers the newest object's base offset + 1
        while (consumer.highwater(tp) is None or await consumer.position(tp) < consumer.highwater(tp)) \
                and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            out += [(r.offset, r.key, r.value) for records in batches.values() for r in records]
        return out
    finally:
        await consumer.stop()


async def commit(bootstrap: str, topic: str, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


def create(bootstrap: str, topic: str, compact: bool = False) -> None:
    config = {"cleanup.policy": "compact"} if compact else {}
    KafkaAdminClient(bootstrap_servers=bootstrap).create_topics([NewTopic(topic, 1, 1, topic_configs=config)])


def test_merged_batches_read_back_whole_from_any_offset_and_retention_keeps_what_is_not_committed(disk_broker):
    broker, store = disk_broker
    create(broker.bootstrap, "events")
    batches = [[(f"u{j}".encode(), f"v{i * 5 + j}".encode()) for j in range(5)] for i in range(40)]
    asyncio.run(produce_batches(broker.bootstrap, "events", batches))
    asyncio.run(commit(broker.bootstrap, "events", 150))
    before = asyncio.run(read_from(broker.bootstrap, "events", 0))
    assert listed(store, "events") == 40

    counts = maintenance(store, held=("events",)).run_pass()
    assert counts["written"] >= 1
    assert listed(store, "events") == 2  # every batch but the active one merged, consumed or not
    assert asyncio.run(read_from(broker.bootstrap, "events", 0)) == before
    assert asyncio.run(read_from(broker.bootstrap, "events", 7)) == before[7:]  # inside a merged batch
    assert asyncio.run(read_from(broker.bootstrap, "events", 160)) == before[160:]  # past the commit, inside it

    maintenance(store, retention_s=0.001, held=("events",)).run_pass()
    assert listed(store, "events") == 2  # the merged batch holds offsets 150.., not committed: kept whole
    assert asyncio.run(read_from(broker.bootstrap, "events", 0)) == before
    asyncio.run(commit(broker.bootstrap, "events", 195))
    maintenance(store, retention_s=0.001, held=("events",)).run_pass()
    assert listed(store, "events") == 1  # committed through the merged batch: expired; the active one stays
    assert asyncio.run(read_from(broker.bootstrap, "events", None)) == before[195:]  # EARLIEST moved on
    assert asyncio.run(read_from(broker.bootstrap, "events", 0)) == before[195:]


def test_compaction_keeps_each_keys_last_value_and_readers_reach_the_end(disk_broker):
    broker, store = disk_broker
    create(broker.bootstrap, "table-changelog", compact=True)
    batches = [[(f"k{j}".encode(), f"{i}-{j}".encode()) for j in range(4)] for i in range(30)]
    batches[-1] = [(b"k3", None)]  # a tombstone
    batches.append([(b"k0", b"last")])  # the active batch: never rewritten
    asyncio.run(produce_batches(broker.bootstrap, "table-changelog", batches))

    maintenance(store).run_pass()
    records = asyncio.run(read_from(broker.bootstrap, "table-changelog", 0))
    assert [(key, value) for _, key, value in records] == [(b"k1", b"28-1"), (b"k2", b"28-2"), (b"k3", None),
                                                           (b"k0", b"last")]
    assert listed(store, "table-changelog") == 2

    started = time.monotonic()
    state, _ = read_topic(log_consumer(Settings(kafka_bootstrap=broker.bootstrap)), "table-changelog")
    assert time.monotonic() - started < 5  # no wait at a gap (kafka_io.END_GAP_S)
    assert {r.key: r.value for r in state} == {b"k0": b"last", b"k1": b"28-1", b"k2": b"28-2", b"k3": None}

    maintenance(store, retention_s=0.001).run_pass()  # tombstones past retention go at the next cleaning
    produce = [[(b"k1", b"again")], [(b"k2", b"again")]]
    asyncio.run(produce_batches(broker.bootstrap, "table-changelog", produce))
    maintenance(store, retention_s=0.001).run_pass()
    records = asyncio.run(read_from(broker.bootstrap, "table-changelog", 0))
    assert [(key, value) for _, key, value in records] == [(b"k0", b"last"), (b"k1", b"again"), (b"k2", b"again")]


def test_concurrent_producers_of_one_partition_never_share_an_offset(disk_broker):
    """Tansu updates a partition's high watermark with If-Match writes; s3rver as published ignored the
    condition, and two producers took the same offsets (one's record then skipped by every consumer)."""
    broker, _ = disk_broker
    create(broker.bootstrap, "shared")

    async def produce(name: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, acks=1)
        await producer.start()
        try:
            for i in range(150):
                await (await producer.send("shared", f"{name}-{i}".encode(), key=name.encode()))
        finally:
            await producer.stop()

    async def both() -> None:
        await asyncio.gather(produce("a"), produce("b"), produce("c"))

    asyncio.run(both())
    records = asyncio.run(read_from(broker.bootstrap, "shared", 0))
    assert [offset for offset, _, _ in records] == list(range(450))
    assert sorted(value for _, _, value in records) == sorted(f"{n}-{i}".encode() for n in "abc" for i in range(150))


def test_the_memory_mode_is_the_maintained_store_in_ram_and_leaves_nothing(tmp_path):
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=None, embedded_kafka_storage="memory",
                        embedded_kafka_port=pick_unused_port(), embedded_storage_port=pick_unused_port())
    mine = f"cartwise-broker-{os.getpid()}-*"
    with embedded_broker(settings) as broker:
        [directory] = RAM_DIR.glob(mine) if RAM_DIR.is_dir() else Path(tempfile.gettempdir()).glob(mine)
        assert broker.fresh and (directory / BUCKET).is_dir()
        assert len(broker.pids()) == 3  # Tansu, s3rver and the log maintenance
    assert not directory.exists()
