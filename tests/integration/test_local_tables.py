"""The stream worker's Tables kept on local disk (streams/table_store.py): a restarted worker reads none of
the changelog it already holds, and a worker whose local state is ahead of its broker's changelog (another
broker's log) drops it rather than serving it."""

from __future__ import annotations

import asyncio
import shutil
import uuid

import pytest
from qdrant_client import QdrantClient
from portpicker import pick_unused_port

from cartwise.app.broker import EmbeddedBroker
from cartwise.datasets import rees46_records
from cartwise.index import QdrantServerIndex
from cartwise.kafka_io import ensure_topics
from cartwise.personalization import UserHistory
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings, Topics
from streams import table_recovery
from streams.app import StreamWorker
from streams.table_store import LocalStore
from tests.support import eventually, send as send_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RECORDS = 300  # REES46 rows replayed (with their catalog events)


def count_changelog_reads(monkeypatch) -> list[int]:
    """A one-item list counting the changelog records a worker's recovery reads: faust's, and the completion's
    (streams/table_recovery.py)."""
    read = [0]
    apply, tail = LocalStore.apply_changelog_batch, table_recovery.changelog_tail

    def counting_apply(store, batch, to_key, to_value):
        batch = list(batch)
        read[0] += len(batch)
        apply(store, batch, to_key, to_value)

    def counting_tail(*args):
        tails = tail(*args)
        read[0] += sum(len(t.newest) for t in tails.values())
        return tails

    monkeypatch.setattr(LocalStore, "apply_changelog_batch", counting_apply)
    monkeypatch.setattr(table_recovery, "changelog_tail", counting_tail)
    return read


async def run_worker(settings: Settings, send: int = 0) -> dict:
    """Start a worker on ``settings``, replay the first ``send`` REES46 rows and wait until they are consumed,
    stop it. Returns its user histories once recovered, decoded (a value written holds tuples where one read
    back from the changelog holds lists)."""
    worker = StreamWorker(settings, QdrantServerIndex(QdrantClient(":memory:")))
    await asyncio.to_thread(ensure_topics, settings)
    try:
        await worker.start(ModelRegistry(settings.models_dir).active())
        if send:
            sent = await asyncio.to_thread(send_events, settings, records=rees46_records(limit=send))
            await eventually(lambda: worker.consumed >= sent, 180, f"{sent} events consumed")
        await worker._table_recovered()
        return {user: UserHistory.from_json(value) for user, value in worker.histories.items()}
    finally:
        await worker.stop()


async def test_a_restart_reads_only_the_tail_and_state_ahead_of_the_log_is_dropped(tmp_path, broker, registry_dir,
                                                                                   monkeypatch):
    name = f"local-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=broker.bootstrap, kafka_idempotence=False, app_id=name,
                        topics=Topics(**{f: f"{name}.{f}" for f in ("catalog", "purchases", "carts", "views",
                                                                    "user_control", "models_updates")}))
    shutil.copytree(registry_dir, settings.models_dir)
    before = await run_worker(settings, send=RECORDS)
    assert before and (settings.tables_dir / f"{name}-user_histories-changelog-0").is_dir()

    read = count_changelog_reads(monkeypatch)
    assert await run_worker(settings) == before
    assert read == [0]  # the histories came from local disk, none from the changelog

    with EmbeddedBroker(pick_unused_port(), tmp_path / "other-broker.log") as other:  # a log that ends before ours
        assert await run_worker(settings.model_copy(update={"kafka_bootstrap": other.bootstrap})) == {}
