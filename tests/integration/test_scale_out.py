"""Scale-out: two stream workers in one consumer group over four partitions of every topic, on the
embedded broker, with the real Qdrant Edge index and ONNX encoders.

The two workers are two StreamWorker instances in this process, sharing one index object: a Qdrant Edge
shard and qdrant-client's local mode each allow one owner, so separate processes could not share an index
here (in production they share a Qdrant server). Everything else is theirs alone: each has its faust app
(its own group member, consumer, producer and Tables), its data directory and its swap coordinator; they
share the registry (one directory, as a shared volume would) and the broker, and coordinate a swap only
through the swap control topic and models.updates.

v2 is v1 followed by a random rotation W (tests/conftest.py), so every v2 vector can be checked exactly."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from cartwise.app.bench.consistency import Expected
from cartwise.app.replay import replay
from cartwise.datasets import rees46_records
from cartwise.index import EdgeIndex
from cartwise.kafka_io import consumer_lag, ensure_topics, log_consumer, make_producer, read_topic, swap_control_topic
from cartwise.lifecycle import request_swap
from cartwise.personalization import UserHistory, user_vector
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings, Topics
from streams.app import HISTORY_TABLE, StreamWorker
from streams.journal import JOURNAL_KEY, SwapJournal, read_control
from tests.conftest import rotated_registry
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PARTITIONS = 4
SETTLE_S = 240.0
RECORDS = 1200  # REES46 behavior events replayed (with their catalog events)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory, registry_dir):
    """A registry with v1 (active) and v2 (v1 rotated by W), and W."""
    return rotated_registry(tmp_path_factory, registry_dir, seed=2)


class Group:
    """Two StreamWorkers of one consumer group (a fresh group, fresh topics) over one shared index."""

    def __init__(self, root: Path, broker, models: Path, **extra) -> None:
        name = f"scale-{uuid.uuid4().hex[:8]}"
        topics = Topics(**{f: f"{name}.{f}" for f in ("catalog", "purchases", "carts", "views", "user_control",
                                                      "models_updates")})
        shutil.copytree(models, root / "models")
        self.settings = [Settings(data_dir=root / f"worker-{i}", kafka_bootstrap=broker.bootstrap,
                                  kafka_idempotence=False, app_id=name, topics=topics, partitions=PARTITIONS,
                                  **extra) for i in range(2)]
        for settings in self.settings:  # one registry, as a shared volume would give separate processes
            settings.data_dir.mkdir(parents=True)
            (settings.data_dir / "models").symlink_to(root / "models")
        self.index = EdgeIndex(root / "index")
        self.workers = [StreamWorker(settings, self.index) for settings in self.settings]

    @property
    def settings0(self) -> Settings:
        return self.settings[0]

    async def start(self) -> None:
        await asyncio.to_thread(ensure_topics, self.settings0)
        active = ModelRegistry(self.settings0.models_dir).active()
        for worker in self.workers:
            await worker.start(active)
        await wait_for(self.settled, what="four partitions split between the two workers")

    def settled(self) -> bool:
        """Each worker owns some user-history partitions, and together they own each exactly once."""
        owned = [w._owned_history_partitions() for w in self.workers]
        return all(owned) and not (owned[0] & owned[1]) and owned[0] | owned[1] == set(range(PARTITIONS))

    async def stop(self) -> None:
        for worker in self.workers:
            await worker.stop()
        self.index.close()

    def histories(self) -> dict[str, UserHistory]:
        """user_id -> history, from the Table of the worker that owns the user's partition."""
        tables = [dict(w.histories.items()) for w in self.workers]
        merged = {u: UserHistory.from_json(h) for table in tables for u, h in table.items()}
        assert len(merged) == sum(map(len, tables)), "a user's history is held by two workers"
        return merged


async def wait_for(check, what: str):
    """:func:`tests.support.eventually` with room for consumer-group rebalances and a whole swap."""
    return await eventually(check, SETTLE_S, what)


def send(settings: Settings, records) -> int:
    producer = make_producer(settings)
    try:
        return replay(records, producer, settings.topics)
    finally:
        producer.close()


async def consume_all(group: Group, sent: int) -> None:
    """Wait until the group has committed every event (no lag on any source topic) and no user waits for a
    product any more (every product is in the catalog before its first behavior event, but on a partition
    that may be the other worker's: the waiting worker retries when the products collection grows)."""
    topics = [group.settings0.topics.catalog, *group.settings0.topics.user_keyed]
    await wait_for(lambda: sum(w.consumed for w in group.workers) >= sent, what=f"{sent} events consumed")
    await wait_for(lambda: not any(consumer_lag(group.settings0, topics).values()), what="no consumer lag")
    await wait_for(lambda: not any(w.behavior.pending for w in group.workers), what="no user waiting for a product")


def assert_changelog_beside_sources(settings: Settings) -> None:
    """Every user's history changelog record is in the partition of the user's source events: the changelog
    partition faust restores to the worker that owns them (streams/faust_hooks.py, RawKeyTable)."""
    consumer = log_consumer(settings)
    try:
        sources = {r.key: r.partition for topic in settings.topics.user_keyed for r in read_topic(consumer, topic)[0]}
        changelog, _ = read_topic(consumer, f"{settings.app_id}-{HISTORY_TABLE}-changelog")
    finally:
        consumer.close()
    misplaced = [r.key for r in changelog if r.partition != sources[r.key]]
    assert changelog and not misplaced, f"{len(misplaced)} of {len(changelog)} changelog records misplaced"


def assert_histories_of(group: Group, records) -> None:
    """The workers' Tables hold every user's history as the source events make it, each user once."""
    expected = Expected.of(list(records), group.settings0.personalization.max_history).histories
    held = group.histories()
    assert set(held) == set(expected)
    assert all(held[u].digest() == h.digest() for u, h in expected.items())


def collection(index, name: str) -> dict[str, np.ndarray]:
    """key (product_id or user_id) -> vector of every point of ``name``."""
    key = "product_id" if name.startswith("products") else "user_id"
    return {h.payload[key]: h.vector for h in index.search(name, np.ones(384, np.float32) / 20, 100_000,
                                                           with_vectors=True, exact=True)}


def assert_users_rebuilt(group: Group, users: str, product_vectors: dict[str, np.ndarray],
                         complete: bool = True) -> set[str]:
    """Every point in ``users`` equals the slow-path rebuild from its user's history with ``product_vectors``,
    and (``complete``) every user of every partition has one. Returns the users without a point."""
    histories = group.histories()
    stored = collection(group.index, users)
    assert histories and set(stored) <= set(histories)
    missing = set(histories) - set(stored)
    assert not (complete and missing), f"{len(missing)} of {len(histories)} users have no point in {users}"
    for user_id in stored:
        history = histories[user_id]
        expected = user_vector(history, product_vectors, group.settings0.personalization)
        assert np.abs(expected.vector - stored[user_id]).max() < 1e-3, user_id
    return missing


@pytest_asyncio.fixture(loop_scope="session")
async def group(tmp_path, broker, rotated):
    running = Group(tmp_path, broker, rotated[0], backfill_batch=16)
    await running.start()
    yield running
    await running.stop()


def control_records(settings: Settings) -> list[tuple[bytes, bytes | None]]:
    """Every record of the swap control topic, in log order (the embedded broker does not compact)."""
    consumer = log_consumer(settings)
    try:
        records, _ = read_topic(consumer, swap_control_topic(settings))
    finally:
        consumer.close()
    return [(r.key, r.value) for r in records]


@pytest.mark.timeout(900)
async def test_two_workers_apply_every_event_once_and_swap_every_user(group, rotated):
    """Each event is applied by exactly one worker; the swap rebuilds every user of all four partitions
    (each worker its own), dual-writes events produced during it, and activates only after every partition
    is recorded done."""
    _, rotation = rotated
    settings = group.settings0
    records = list(rees46_records(limit=RECORDS))
    sent = await asyncio.to_thread(send, settings, records[: RECORDS // 2])
    await consume_all(group, sent)
    consumed = [w.consumed for w in group.workers]
    assert sum(consumed) == sent and all(consumed), consumed  # split, and nothing processed twice
    assert_changelog_beside_sources(settings)
    assert_histories_of(group, records[: RECORDS // 2])
    products_v1 = collection(group.index, "products_v1")
    assert_users_rebuilt(group, "users_v1", products_v1)

    await asyncio.to_thread(request_swap, settings, "v2", "test")
    await wait_for(lambda: all(w.targets.get("v2") for w in group.workers), what="both workers dual-write")
    more = await asyncio.to_thread(send, settings, records[RECORDS // 2:])  # live events during the swap
    await wait_for(lambda: ModelRegistry(settings.models_dir).active() == "v2", what="switch to v2")
    await consume_all(group, sent + more)
    assert sum(w.consumed for w in group.workers) == sent + more

    products_v1 = collection(group.index, "products_v1")
    products_v2 = collection(group.index, "products_v2")
    assert set(products_v2) == set(products_v1)
    worst = max(float(np.abs(rotation @ v - products_v2[p]).max()) for p, v in products_v1.items())
    assert worst < 1e-3, f"products_v2 is not v2's embedding of the catalog (max diff {worst})"
    assert_users_rebuilt(group, "users_v2", {p: rotation @ v for p, v in products_v1.items()})
    assert all(w.swaps.stats.get("users", 0) > 0 for w in group.workers)  # each rebuilt its own partitions

    # the log of the control topic: the switch was journalled after all four partitions were recorded done
    log = control_records(settings)
    journals = [(i, SwapJournal.model_validate_json(v)) for i, (k, v) in enumerate(log) if k == JOURNAL_KEY]
    started = next(j.backfill for _, j in journals if j.backfill and j.backfill.version == "v2")
    switched = next(i for i, j in journals if j.live[:1] == ["v2"])
    done = {int(k.rsplit(b"/", 1)[1]): i for i, (k, v) in enumerate(log)
            if v is not None and k.startswith(f"users-done/{started.attempt}/".encode())}
    assert set(done) == set(range(PARTITIONS)) and max(done.values()) < switched
    journal = read_control(settings)[0].journal
    assert journal.live == ["v2", "v1"] and journal.backfill is None


@pytest.mark.timeout(900)
async def test_another_worker_resumes_a_swap_whose_leader_stopped(tmp_path, broker, rotated):
    """The leader stops mid-backfill; the other worker takes over models.updates, resumes from the journal
    on the control topic (not from the start), rebuilds every user, now of all four partitions, and
    switches."""
    _, rotation = rotated
    group = Group(tmp_path, broker, rotated[0], backfill_batch=2)
    await group.start()
    try:
        settings = group.settings0
        sent = await asyncio.to_thread(send, settings, rees46_records(limit=RECORDS))
        await consume_all(group, sent)
        await asyncio.to_thread(request_swap, settings, "v2", "test")
        await wait_for(lambda: (b := group.workers[0].swaps.running()) is not None and b.products > 0,
                       "backfill under way")
        leader = next(w for w in group.workers if w._leads())
        follower = next(w for w in group.workers if w is not leader)
        group.workers.remove(leader)
        await leader.stop()
        halted = read_control(settings)[0].journal.backfill
        assert halted is not None and halted.phase == "products" and halted.products > 0
        assert ModelRegistry(settings.models_dir).active() == "v1"

        await wait_for(lambda: ModelRegistry(settings.models_dir).active() == "v2", what="resumed swap")
        catalog_events = sum(r.topic_field == "catalog" for r in rees46_records(limit=RECORDS))
        assert follower.swaps.stats["products"] < catalog_events  # resumed from the journal's offsets
        assert follower._owned_history_partitions() == set(range(PARTITIONS))
        assert_histories_of(group, rees46_records(limit=RECORDS))  # the leader's users restored to the follower
        products_v1 = collection(group.index, "products_v1")
        assert set(collection(group.index, "products_v2")) == set(products_v1)
        assert_users_rebuilt(group, "users_v2", {p: rotation @ v for p, v in products_v1.items()})
    finally:
        await group.stop()
