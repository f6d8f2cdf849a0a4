"""Making sure the running service has the simulation's catalog: ask it (AdminService status, SimilarProducts of
sampled products), and when it lacks products, publish the catalog to Kafka as `cartwise replay` does and wait
until the worker has indexed it."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Callable

import grpc

from cartwise.app.operations import fetch_status
from cartwise.app.replay import replay
from cartwise.app.simulation.catalog import SimCatalog
from cartwise.client import AsyncClient
from cartwise.kafka_io import make_producer
from cartwise.settings import Settings
from cartwise.v1 import admin_pb2

PROBES = 50          # sampled products asked for by SimilarProducts
POLL_S = 2.0         # each status asks the broker for the worker's lag: not more often
PROBE_TIMEOUT_S = 30.0
# (stage, done, total): "publishing" counts events sent, "indexing" the products the service holds
Progress = Callable[[str, int, int], None]


async def missing(client: AsyncClient, product_ids: list[str]) -> list[str]:
    """Those of ``product_ids`` the service answers NOT_FOUND for (SimilarProducts, one hit). Raises
    grpc.aio.AioRpcError for another failure."""
    async def absent(pid: str) -> bool:
        try:
            await client.similar_products(pid, limit=1, timeout_s=PROBE_TIMEOUT_S)
            return False
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return True

    flags = [await absent(pid) for pid in product_ids]  # one at a time: the service may be busy embedding
    return [pid for pid, gone in zip(product_ids, flags) if gone]


def probe_ids(catalog: SimCatalog, seed: int) -> list[str]:
    """A seeded sample of PROBES products of ``catalog`` and its last one (published last)."""
    ids = catalog.product_ids
    return sorted(set(random.Random(seed).sample(ids, min(PROBES, len(ids))) + ids[-1:]))


def catalog_lag(status: admin_pb2.Status, topic: str) -> int:
    """The worker's consumer lag on ``topic`` (-1: unknown, the service could not reach the broker)."""
    if status.lag < 0:
        return -1
    return next((t.lag for t in status.lag_by_topic if t.topic == topic), 0)


async def ensure_catalog(settings: Settings, client: AsyncClient, catalog: SimCatalog, seed: int = 0,
                         timeout_s: float = 3600.0, progress: Progress = lambda stage, done, total: None) -> int:
    """Publish ``catalog`` to the catalog topic unless the service at ``client.target`` already holds as many
    products and every probe (:func:`probe_ids`) among them, then wait until the catalog topic's lag is 0 and
    every probe is found. Returns the events published (0: the service had the catalog). Raises TimeoutError
    after ``timeout_s``, grpc.aio.AioRpcError when the service fails, kafka.errors.KafkaError without a
    broker."""
    probes, total = probe_ids(catalog, seed), len(catalog.records)
    status = await fetch_status(client.target, settings=settings)
    if status.products >= total and not await missing(client, probes):
        return 0
    producer = make_producer(settings)
    try:
        sent = 0

        def advance() -> None:
            nonlocal sent
            sent += 1
            if sent % 1000 == 0 or sent == total:
                progress("publishing", sent, total)

        await asyncio.to_thread(replay, catalog.records, producer, settings.topics, progress=advance)
    finally:
        producer.close()
    await wait_indexed(settings, client, probes, total, timeout_s, progress)
    return sent


async def wait_indexed(settings: Settings, client: AsyncClient, probes: list[str], total: int, timeout_s: float,
                       progress: Progress) -> None:
    """Poll the service every POLL_S until the catalog topic's lag is 0 (or unknown) and no probe is missing.
    Raises TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await fetch_status(client.target, settings=settings)
        progress("indexing", min(status.products, total), total)
        if catalog_lag(status, settings.topics.catalog) <= 0 and not await missing(client, probes):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"catalog not indexed within {timeout_s:.0f} s ({status.products} products)")
        await asyncio.sleep(POLL_S)
