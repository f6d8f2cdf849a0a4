"""The stream worker over the Qdrant server backend (QdrantServerIndex on qdrant-client's local mode; no
Qdrant server can be installed here), on the embedded broker with the real ONNX encoder: every index call
it makes runs off its event loop (streams/index_calls.py), and what it writes is what the slow path
computes."""

from __future__ import annotations

import asyncio
import shutil
import threading
import uuid

import numpy as np
import pytest
from qdrant_client import QdrantClient

from cartwise.catalog import TEXT_DIGEST, point_id
from cartwise.datasets import rees46_records
from cartwise.index import QdrantServerIndex
from cartwise.kafka_io import ensure_topics
from cartwise.lifecycle import collection_names
from cartwise.personalization import UserHistory, user_vector
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings, Topics
from streams.app import StreamWorker
from tests.support import eventually, send

pytestmark = pytest.mark.integration
RECORDS = 400


class CallThreads:
    """A VectorIndex that records the thread of every call it passes on to ``index``."""

    def __init__(self, index) -> None:
        self.index, self.threads = index, set()

    @property
    def remote(self) -> bool:
        return self.index.remote

    def __getattr__(self, name):
        method = getattr(self.index, name)

        def call(*args, **kwargs):
            self.threads.add(threading.get_ident())
            return method(*args, **kwargs)

        return call


async def test_the_worker_over_a_qdrant_server_calls_it_off_its_event_loop(tmp_path, broker, registry_dir):
    name = f"server-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=broker.bootstrap, kafka_idempotence=False, app_id=name,
                        topics=Topics(**{f: f"{name}.{f}" for f in ("catalog", "purchases", "carts", "views",
                                                                    "user_control", "models_updates")}))
    shutil.copytree(registry_dir, settings.models_dir)
    index = CallThreads(QdrantServerIndex(QdrantClient(":memory:")))
    worker = StreamWorker(settings, index)
    await asyncio.to_thread(ensure_topics, settings)
    version = ModelRegistry(settings.models_dir).active()
    await worker.start(version)
    try:
        sent = await asyncio.to_thread(send, settings, records=rees46_records(limit=RECORDS))
        await eventually(lambda: worker.consumed >= sent and not worker.behavior.pending, 180,
                         f"{sent} events consumed and no user waiting for a product")
        assert index.threads and threading.get_ident() not in index.threads, "an index call ran on the loop"

        products, users, groups = collection_names(version)
        histories = {u: UserHistory.from_json(h) for u, h in worker.histories.items()}
        stored = index.retrieve(users, [point_id(u) for u in histories], with_vectors=True)
        assert len(stored) == len(histories) > 0
        ids = {pid for h in histories.values() for pid in h.product_ids()}
        vectors = {hit.payload["product_id"]: hit.vector
                   for hit in index.retrieve(products, [point_id(p) for p in ids], with_vectors=True)}
        for hit in stored:
            expected = user_vector(histories[hit.payload["user_id"]], vectors, settings.personalization)
            assert np.abs(expected.vector - hit.vector).max() < 1e-3, hit.payload["user_id"]
        texts = {hit.payload[TEXT_DIGEST] for hit in index.scroll(products, 100_000)}
        assert index.count(groups) == len(texts) > 0  # one text group per distinct product text
    finally:
        await worker.stop()
