"""AdminService: the running service's own account of itself for ``cartwise status`` (a Qdrant Edge shard
has one owner process, so an operator's tool asks the service instead of opening the index)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Mapping

import grpc

from cartwise.index import AsyncVectorIndex
from cartwise.kafka_io import consumer_lag
from cartwise.settings import Settings
from cartwise.v1 import admin_pb2 as pb
from cartwise.v1 import admin_pb2_grpc as pb_grpc
from encoders.runtime import ActiveModel

log = logging.getLogger(__name__)
LAG_TIMEOUT_S = 5.0


def broker_location(settings: Settings) -> str:
    """Where the events live: the bootstrap address, and for the embedded broker its store."""
    if not settings.embedded_broker:
        return settings.bootstrap
    if settings.embedded_kafka_storage == "memory":
        return f"{settings.bootstrap} (embedded, in memory)"
    return f"{settings.bootstrap} (embedded, on disk under {(settings.data_dir / 'broker').resolve()})"


def group_lag(settings: Settings) -> dict[str, int]:
    """topic -> lag of the worker's consumer group over every topic it consumes (``cartwise status`` and the
    cartwise_consumer_lag metric). Blocking; raises kafka.errors.KafkaError or TimeoutError like
    cartwise.kafka_io.consumer_lag."""
    topics = settings.topics
    return consumer_lag(settings, [topics.catalog, *topics.user_keyed, topics.models_updates], LAG_TIMEOUT_S)


class AdminServicer(pb_grpc.AdminServiceServicer):
    """GetStatus. ``worker_status`` (None in an API-only process) returns the stream worker's counters under
    the names of :class:`cartwise.v1.admin_pb2.Status` fields (applied, dead_lettered, stale, forgotten,
    expired, stream_time, repair_running, backfill_version). ``index`` is read asynchronously
    (cartwise.index.open_reader)."""

    def __init__(self, settings: Settings, index: AsyncVectorIndex, active: ActiveModel, role: str,
                 worker_status: Callable[[], Mapping] | None) -> None:
        self.settings, self.index, self.active, self.role = settings, index, active, role
        self.worker_status = worker_status
        self.started = time.monotonic()

    async def GetStatus(self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext) -> pb.Status:
        model = self.active.current
        status = pb.Status(
            active_version=model.version, role=self.role, runs_worker=self.worker_status is not None,
            products=await self.index.count(model.products), users=await self.index.count(model.users),
            broker=broker_location(self.settings), index=self.settings.qdrant_url or str(self.settings.index_dir.resolve()),
            uptime_s=time.monotonic() - self.started, **(self.worker_status() if self.worker_status else {}))
        lag = await self._lag()
        status.lag = sum(lag.values()) if lag is not None else -1
        status.lag_by_topic.extend(pb.TopicLag(topic=t, lag=n) for t, n in (lag or {}).items())
        return status

    async def _lag(self) -> dict[str, int] | None:
        """Lag of the worker's group per topic, or None when the broker does not answer in time."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(group_lag, self.settings), 2 * LAG_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - status must answer even when the broker does not
            log.warning("consumer lag unavailable: %s", err)
            return None
