"""Composition of the service: broker (when none is configured), model registry, index, stream worker
and gRPC API. Role ``all`` (the embedded default) runs everything in one process and one event loop;
``worker`` and ``api`` run the halves as separate processes, which coordinate only through the
``models.updates`` topic and the model registry."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import time
from typing import Literal

from cartwise.app.broker import EmbeddedBroker, embedded_broker
from cartwise.app.playground import Playground
from cartwise.app.playground import check_binding as check_playground_binding
from cartwise.index import AsyncVectorIndex, VectorIndex, open_index, open_reader
from cartwise.kafka_io import ensure_topics
from cartwise.lifecycle import ModelFollower, ensure_active
from cartwise.metrics import Metrics, serve_metrics
from cartwise.registry import ModelRegistry
from cartwise.settings import Precision, Settings
from encoders.batching import QueryBatcher
from encoders.query_cache import QueryCache
from encoders.export import pretrained_version
from encoders.quantize import served_copy
from encoders.runtime import ActiveModel, ServingModel
from grpc_api.admin import AdminServicer, group_lag
from grpc_api.security import ServerSecurity
from grpc_api.server import ApiServer
from grpc_api.impressions import ImpressionLog
from grpc_api.servicer import SearchServicer
from streams.app import StreamWorker

log = logging.getLogger(__name__)
REFREEZE_S = 30.0  # keep_heap_frozen's interval
Role = Literal["all", "worker", "api"]


class RoleError(ValueError):
    """Settings that cannot run the requested role (e.g. separate processes over one Qdrant Edge)."""


def ensure_active_model(registry: ModelRegistry, precision: Precision = "int8") -> str:
    """The active version; on first start (none active) the registry's pretrained encoder is activated,
    exported to ONNX first only if the registry does not hold it yet, and with ``precision`` "int8" its
    int8 copy (encoders/quantize.py), published once (cartwise.lifecycle.ensure_active)."""
    def pretrained() -> str:
        log.info("no active model: activating the pretrained MiniLM-L6 (%s; exported to ONNX once)", precision)
        return served_copy(registry, pretrained_version(registry), precision)

    return ensure_active(registry, pretrained)


def check_role(settings: Settings, role: Role, index_given: bool = False) -> None:
    """Raise RoleError when ``settings`` cannot run ``role`` as a process of its own."""
    if role != "all" and settings.embedded_broker:
        raise RoleError(f"--role {role} runs beside other processes: set CARTWISE_KAFKA_BOOTSTRAP to the shared broker")
    if role == "api" and not (settings.qdrant_url or index_given):
        raise RoleError("--role api reads the index the worker writes: set CARTWISE_QDRANT_URL "
                        "(a Qdrant Edge shard has one owner process)")


class Service:
    """The service, or one role of it. ``await start()`` then ``await stop()``; ``port`` is the gRPC port.

    With no broker configured (role ``all`` only) the embedded one is started on
    ``settings.embedded_kafka_port`` and stopped with it, unless ``broker`` is one already started there (a
    benchmark loads it before the worker starts; it is left running at stop). ``index`` is an already open
    index to share (it is left open at stop). The stream worker writes through ``index`` (opened from the
    settings when not given); the API reads through ``reader`` (cartwise.index.open_reader: its own
    AsyncQdrantClient for a Qdrant server, else ``index`` inline), so an api-role process over a Qdrant server
    opens no blocking client at all. Raises RoleError, and SecurityConfigError (grpc_api/security.py) for API
    security settings that cannot serve."""

    def __init__(self, settings: Settings, role: Role = "all", index: VectorIndex | None = None,
                 broker: EmbeddedBroker | None = None) -> None:
        check_role(settings, role, index is not None)
        # read the certificates and check the binding before anything starts
        self._security = ServerSecurity.from_settings(settings) if role in ("all", "api") else None
        if role in ("all", "api") and settings.playground_port is not None:
            check_playground_binding(settings)
        self.settings, self.role = settings, role
        self.broker: EmbeddedBroker | None = broker
        self._owns_broker = broker is None
        # the worker's writable index; an api-role process only reads (``reader``), as it does over a Qdrant server
        self.index: VectorIndex | None = index if role != "api" else None
        self._read_index = index
        self._owns_index = index is None
        self.reader: AsyncVectorIndex | None = None
        self.worker: StreamWorker | None = None
        self.api: ApiServer | None = None
        self.active: ActiveModel | None = None
        self.follower: ModelFollower | None = None
        self._batcher: QueryBatcher | None = None
        self.servicer: SearchServicer | None = None
        self.impressions: ImpressionLog | None = None
        self.playground: Playground | None = None
        # Prometheus metrics (cartwise/metrics.py) only with an endpoint to serve them
        self.metrics: Metrics | None = Metrics() if settings.metrics_port is not None else None
        self._metrics_server = None
        self._refreezing: asyncio.Task | None = None

    @property
    def port(self) -> int:
        """The bound gRPC port."""
        return self.api.port

    @property
    def metrics_port(self) -> int | None:
        """The bound metrics port (None without CARTWISE_METRICS_PORT or before ``start``)."""
        return self._metrics_server.server_port if self._metrics_server else None

    @property
    def query_cache(self) -> QueryCache:
        """The API's query-embedding cache (its hit and miss counts); raises AttributeError before ``start``."""
        if self._batcher is None:
            raise AttributeError("the API is not started")
        return self._batcher.cache

    async def start(self) -> None:
        """Start every part of the role; raises what a part raises (BrokerError, RegistryError, OSError)."""
        s = self.settings
        if self.metrics is not None and self._metrics_server is None:
            self._start_metrics()
        if s.embedded_broker and self.broker is None:
            self.broker = embedded_broker(s).start()
        ensure_topics(s)
        registry = ModelRegistry(s.models_dir)
        active = ensure_active_model(registry, s.encoder_precision)
        if self.role in ("all", "worker"):
            self.index = self.index or open_index(s)
            fresh = bool(self.broker and self.broker.fresh)
            if fresh:
                self._reset_derived_state()
            self.worker = StreamWorker(s, self.index)
            await self.worker.start(active, sources_kept=not fresh)
            if self.broker:
                self.broker.mark_used()
        if self.role in ("all", "api"):
            await self._start_api(registry)
            if s.playground_port is not None:
                await self._start_playground()
        freeze_heap()
        self._refreezing = asyncio.ensure_future(keep_heap_frozen())

    async def _start_api(self, registry: ModelRegistry) -> None:
        s = self.settings
        # In one process the worker has loaded the active version (and a candidate it backfills) already.
        preloaded = self.worker.targets.get if self.worker else (lambda version: None)
        version = registry.active()
        self.active = ActiveModel(preloaded(version) or ServingModel.load(registry, version, s.encoder_threads))
        self.reader = open_reader(s, self.index or self._read_index)
        self.follower = ModelFollower(s, registry, self.active, self.reader,
                                      lambda v: ServingModel.load(registry, v, s.encoder_threads), preloaded)
        await self.follower.start()
        self._batcher = QueryBatcher(s.encoder_max_batch, s.encoder_threads, s.query_cache_size,
                                     self.metrics.query_encode_seconds.observe if self.metrics else None)
        admin = AdminServicer(s, self.reader, self.active, self.role, self.worker.status if self.worker else None)
        if s.impressions_buffer:
            self.impressions = ImpressionLog(s)
            await self.impressions.start()
        self.servicer = SearchServicer(s, self.reader, self.active, self._batcher, self.impressions)
        self.api = ApiServer(self.servicer, admin, s.grpc_host, s.grpc_port, self._security, self.metrics)
        await self.api.start()
        log.info("serving %s on %s:%d (Kafka %s)", self.active.current.version, s.grpc_host, self.port,
                 s.bootstrap)

    async def _start_playground(self) -> None:
        """Serve the playground (cartwise/app/playground.py) in front of this process's gRPC API."""
        s = self.settings
        host = "127.0.0.1" if s.grpc_host in ("0.0.0.0", "::") else s.grpc_host
        self.playground = Playground(s, f"{host}:{self.port}", self._user_ids,
                                     lambda: self.worker.clock.now if self.worker else 0.0)
        await self.playground.start()

    async def _user_ids(self, limit: int) -> list[str]:
        """Up to ``limit`` ids of users with a vector in the served version, read as Search reads (through
        ``reader``: an api-role process has no writable index)."""
        return [hit.payload["user_id"] for hit in await self.reader.scroll(self.active.current.users, limit)]

    def _start_metrics(self) -> None:
        """Serve /metrics on ``metrics_host:metrics_port`` with the collectors of this role's parts (each
        read at scrape time; a part not started yet exports nothing). Raises OSError when it cannot bind."""
        s, metrics = self.settings, self.metrics
        registry = ModelRegistry(s.models_dir)
        metrics.watch_model(lambda: self.active.current.version if self.active else registry.active())
        if self.role in ("all", "worker"):
            metrics.watch_worker(lambda: self.worker)
            metrics.watch_lag(lambda: group_lag(s))
        if self.role in ("all", "api"):
            metrics.watch_servicer(lambda: self.servicer)
            metrics.watch_query_cache(lambda: self._batcher.cache if self._batcher else None)
            metrics.watch_impressions(lambda: self.impressions)
        self._metrics_server, _ = serve_metrics(metrics, s.metrics_host, s.metrics_port)

    def _reset_derived_state(self) -> None:
        """The embedded broker started empty (in memory, or a new store), so the events (the source of
        truth) and the user histories of any earlier run are gone; the index derived from them is dropped
        to stay consistent (the swap journal then abandons any backfill and rollback target whose
        collections are gone), and so is the Tables' local state (streams/table_store.py), which describes
        changelogs that no longer exist."""
        for name in self.index.collections():
            log.info("embedded broker starts empty: dropping derived collection %s", name)
            self.index.drop_collection(name)
        if self.settings.tables_dir is not None and self.settings.tables_dir.exists():
            log.info("embedded broker starts empty: removing the Tables' local state in %s", self.settings.tables_dir)
            shutil.rmtree(self.settings.tables_dir)

    async def wait_until_consumed(self, events: int, timeout_s: float = 120.0) -> None:
        """Wait until the worker has consumed ``events`` events since start (applied, stale or
        dead-lettered). Raises TimeoutError."""

        await _until(lambda: self.worker.consumed >= events, timeout_s,
                     lambda: f"worker consumed {self.worker.consumed} of {events} events in {timeout_s} s")

    async def wait_until_indexed(self, timeout_s: float = 300.0) -> None:
        """Wait until the worker has no products collection left to optimize (streams/indexing.py). Raises
        TimeoutError."""
        await _until(lambda: self.worker.indexing.settled, timeout_s,
                     lambda: f"products collections not optimized within {timeout_s} s")

    async def stop(self) -> None:
        """Stop the API (draining), the follower, the worker, the index and the embedded broker it started, in
        that order."""
        if self._refreezing:
            self._refreezing.cancel()
        if self.playground:
            await self.playground.stop()
        if self.api:
            await self.api.stop()
        if self.impressions:
            await self.impressions.stop()
        if self.follower:
            await self.follower.stop()
        if self.worker:
            await self.worker.stop()
        if self._batcher:
            self._batcher.close()
        if self.index and self._owns_index:
            self.index.close()
        if self.broker and self._owns_broker:
            self.broker.stop()
        if self._metrics_server:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None


async def _until(condition, timeout_s: float, failure) -> None:
    """Poll ``condition()`` every 50 ms; raise TimeoutError(``failure()``) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(failure())
        await asyncio.sleep(0.05)


async def keep_heap_frozen(interval_s: float = REFREEZE_S) -> None:
    """:func:`freeze_heap` again every ``interval_s`` seconds, without its full collection (a young-generation
    one instead). Why: the worker's state keeps growing after the start (histories filling up to their cap),
    and every history it writes replaces a value that then reaches the oldest generation, so full
    collections came every few seconds and walked millions of objects with nothing to collect: the event loop
    stalled for them and the worker fell behind at 1,000 events/s (issue #28's soak). Frozen objects are
    still freed by reference counting when they die; only a reference cycle that reached the oldest
    generation before a freeze is kept (none of the service's long-lived state forms cycles)."""
    while True:
        await asyncio.sleep(interval_s)
        gc.collect(1)
        gc.freeze()


def freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``), after a full
    collection. Why: a full (generation 2) collection walks every tracked object, and with the Home Depot
    catalog loaded one took 300-380 ms, every 15-35 s, with nothing to collect; the event loop and with it
    every in-flight Search stood still for it (docs/benchmarks.md, issue #13 session 13). What is alive
    once the service has started (modules, encoders, recovered state) stays alive, so no collection needs
    to look at it again."""
    gc.collect()
    gc.freeze()
