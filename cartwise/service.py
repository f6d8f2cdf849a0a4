"""Composition of the embedded service: broker (when none is configured), model registry, index,
stream worker and gRPC API, in one process and one event loop."""

from __future__ import annotations

import asyncio
import logging
import time

from cartwise.broker import EmbeddedBroker, ensure_topics
from cartwise.index import PRODUCTS_SCHEMA, USERS_SCHEMA, VectorIndex, open_index
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from encoders.batching import QueryBatcher
from encoders.runtime import ActiveModel, ServingModel
from grpc_api.server import ApiServer
from grpc_api.servicer import SearchServicer
from streams.app import StreamWorker

log = logging.getLogger(__name__)


def ensure_active_model(registry: ModelRegistry) -> str:
    """The active version, publishing and activating the pretrained encoder on first start."""
    active = registry.active()
    if active is None:
        from encoders.export import publish_pretrained

        log.info("empty model registry: exporting the pretrained MiniLM-L6 to ONNX (once)")
        active = publish_pretrained(registry).version
        registry.activate(active)
    return active


def ensure_collections(index: VectorIndex, model: ServingModel) -> None:
    """Create the products and users collections of ``model``'s version if missing."""
    index.create_collection(model.products, model.encoder.dims, PRODUCTS_SCHEMA)
    index.create_collection(model.users, model.encoder.dims, USERS_SCHEMA)


class Service:
    """The whole service in one process. ``await start()`` then ``await stop()``; ``port`` is the gRPC port.

    With ``settings.kafka_bootstrap`` unset an embedded broker is started (and stopped) with it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.index: VectorIndex | None = None
        self.worker: StreamWorker | None = None
        self.api: ApiServer | None = None
        self.active: ActiveModel | None = None
        self._batcher: QueryBatcher | None = None

    @property
    def port(self) -> int:
        """The bound gRPC port."""
        return self.api.port

    async def start(self) -> None:
        """Start every part; raises what a part raises (BrokerError, RegistryError, OSError)."""
        s = self.settings
        if not s.kafka_bootstrap:
            s.data_dir.mkdir(parents=True, exist_ok=True)
            self.broker = EmbeddedBroker(s.embedded_kafka_port, s.data_dir / "broker.log").start()
            s = self.settings = s.model_copy(update={"kafka_bootstrap": self.broker.bootstrap})
        ensure_topics(s.kafka_bootstrap, s)
        registry = ModelRegistry(s.models_dir)
        self.active = ActiveModel(ServingModel.load(registry, ensure_active_model(registry), s.encoder_threads))
        self.index = open_index(s)
        if self.broker:
            self._reset_derived_state()
        ensure_collections(self.index, self.active.current)
        self.worker = StreamWorker(s, self.index, self.active)
        await self.worker.start()
        self._batcher = QueryBatcher(s.encoder_max_batch, s.encoder_threads)
        self.api = ApiServer(SearchServicer(s, self.index, self.active, self._batcher), s.grpc_host, s.grpc_port)
        await self.api.start()
        log.info("serving %s on %s:%d (Kafka %s)", self.active.current.version, s.grpc_host, self.port,
                 s.kafka_bootstrap)

    def _reset_derived_state(self) -> None:
        """The embedded broker is memory-only, so the events (the source of truth) and the user histories
        died with the last process; the index derived from them is dropped to stay consistent."""
        for name in self.index.collections():
            log.info("embedded broker starts empty: dropping derived collection %s", name)
            self.index.drop_collection(name)

    async def wait_until_consumed(self, events: int, timeout_s: float = 120.0) -> None:
        """Wait until the worker has consumed ``events`` events since start (applied, stale or
        dead-lettered). Raises TimeoutError."""

        deadline = time.monotonic() + timeout_s
        while self.worker.consumed < events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker consumed {self.worker.consumed} of {events} events in {timeout_s} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop the API (draining), the worker, the index and the embedded broker, in that order."""
        if self.api:
            await self.api.stop()
        if self.worker:
            await self.worker.stop()
        if self._batcher:
            self._batcher.close()
        if self.index:
            self.index.close()
        if self.broker:
            self.broker.stop()
