"""Helpers shared by the test modules: waiting for a condition, a running service with its data loaded, and
reading a topic to its end. Nothing here is a fake: the service is the real one on the real broker."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterable, TypeVar

import pytest
from portpicker import pick_unused_port

from cartwise.app.replay import replay
from cartwise.app.service import Service
from cartwise.datasets import Record
from cartwise.kafka_io import log_consumer, make_producer, read_topic
from cartwise.settings import Settings

T = TypeVar("T")
POLL_S = 0.05
# (topic field of cartwise.settings.Topics, key, value): one message for the service to consume
Message = tuple[str, bytes, bytes]


async def eventually(condition: Callable[[], T | Awaitable[T]], timeout_s: float = 30.0,
                     what: str = "condition", ignoring: tuple[type[BaseException], ...] = ()) -> T:
    """Poll ``condition()`` (sync or async) every 50 ms until it returns a truthy value, and return that
    value; an exception of a type in ``ignoring`` counts as not yet (e.g. a service still starting). Fails
    the test (pytest.fail naming ``what``) after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
        except ignoring:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout_s} s")
        await asyncio.sleep(POLL_S)


def service_settings(data_dir: Path, broker=None, **overrides) -> Settings:
    """Settings of one test service under ``data_dir``: its own consumer group, a free gRPC port, and either
    the shared ``broker`` (tests/integration/conftest.py; then its own models.updates topic, so services of
    different tests never act on each other's swap requests) or an embedded broker of its own."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    if broker is not None:
        place = {"kafka_bootstrap": broker.bootstrap, "kafka_idempotence": False,
                 "topics": {"models_updates": f"models.updates.{name}"}}
    else:
        place = {"embedded_kafka_port": pick_unused_port(), "embedded_storage_port": pick_unused_port()}
    fields = {"data_dir": data_dir, "grpc_port": 0, "app_id": name, **place, **overrides}
    return Settings(**fields)


def send(settings: Settings, messages: Iterable[Message] = (), records: Iterable[Record] = ()) -> int:
    """Produce ``messages`` and replay the REES46 ``records`` (cartwise/app/replay.py) on ``settings``'
    topics, wait for the broker's acks; returns how many events were sent. Blocking."""
    producer = make_producer(settings)
    try:
        sent = 0
        for field, key, value in messages:
            producer.send(getattr(settings.topics, field), key=key, value=value)
            sent += 1
        sent += replay(records, producer, settings.topics)
        producer.flush()
        return sent
    finally:
        producer.close()


@asynccontextmanager
async def running_service(data_dir: Path, models: Path, broker=None, messages: Iterable[Message] = (),
                          records: Iterable[Record] = (), consumed_timeout_s: float = 120.0,
                          **overrides) -> AsyncIterator[Service]:
    """The service (role ``all``) over a copy of the registry ``models``, started, with ``messages`` and
    ``records`` sent and consumed (applied, stale or dead-lettered) before it is yielded; stopped after.
    ``broker`` and ``overrides`` as :func:`service_settings`. Raises TimeoutError when the events are not
    consumed within ``consumed_timeout_s``."""
    shutil.copytree(models, data_dir / "models")
    service = Service(service_settings(data_dir, broker, **overrides))
    await service.start()
    try:
        sent = await asyncio.to_thread(send, service.settings, list(messages), list(records))
        await service.wait_until_consumed(sent, consumed_timeout_s)
        yield service
    finally:
        await service.stop()


def read_all(settings: Settings, topic: str) -> list:
    """Every record on ``topic`` up to its end now, all partitions (cartwise.kafka_io.read_topic: the
    embedded broker's quirks at a topic's end taken care of). Blocking."""
    consumer = log_consumer(settings)
    try:
        return read_topic(consumer, topic)[0]
    finally:
        consumer.close()
