"""What the embedded broker alone adds to freshness: produce-to-consume latency through Tansu and its store.

``python -m cartwise.app.bench.broker_fetch [--rate 1000] [--seconds 60] [--fetch-wait-ms 50]
[--storage disk|memory] [--json]``

A scratch embedded broker (cartwise/app/broker.py) with one single-partition topic; an aiokafka producer
(linger 5 ms, as the service's) sends records stamped with their send time at ``rate`` records/s, and an
aiokafka consumer with fetch long-poll bound ``fetch_wait_ms`` reads them from offset 0. Per 10 s window:
``p50_ms`` and ``p99_ms`` of send-to-receipt latency, ``records``, ``stored_objects`` (batch objects in
the store; 0 in memory) and ``broker_cores`` (CPU of Tansu and s3rver over the window, in cores). Tansu
lists every stored batch of a partition on each read and sleeps before each answer (docs/benchmarks.md,
issue #13 session 12), so latency grows with ``stored_objects`` and moves with the bound."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from portpicker import pick_unused_port

from cartwise.app.bench.common import cpu_seconds
from cartwise.app.broker import BUCKET, embedded_broker
from cartwise.app.log_maintenance import StoreClient
from cartwise.kafka_io import ensure_topics
from cartwise.machine import machine_info
from cartwise.settings import Settings

WINDOW_S = 10.0
DRAIN_S = 3.0  # the consumer reads on this long after the producer stops


async def _produce(producer: AIOKafkaProducer, topic: str, rate: float, until: float) -> None:
    sent, started = 0, time.monotonic()
    while time.monotonic() < until:
        await producer.send(topic, json.dumps(time.time()).encode())
        sent += 1
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await producer.flush()


async def _consume(consumer: AIOKafkaConsumer, until: float, window: Callable[[np.ndarray, float], dict]) -> list[dict]:
    latencies, windows, opened = [], [], time.monotonic()
    while time.monotonic() < until:
        batch = await consumer.getmany(timeout_ms=200)
        now = time.time()
        latencies.extend((now - float(m.value)) * 1000 for records in batch.values() for m in records)
        if time.monotonic() - opened >= WINDOW_S and latencies:
            windows.append(window(np.array(latencies), time.monotonic() - opened))
            latencies, opened = [], time.monotonic()
    return windows


async def _run(settings: Settings, rate: float, seconds: float, fetch_wait_ms: int) -> list[dict]:
    topic = settings.topics.views
    with embedded_broker(settings) as broker:
        ensure_topics(settings)
        processes = [psutil.Process(pid) for pid in broker.pids()]
        store = settings.data_dir / "broker"
        last_cpu = [cpu_seconds(processes)]  # at the start of the current window

        def window(latencies: np.ndarray, span_s: float) -> dict:
            now = cpu_seconds(processes)
            used, last_cpu[0] = now - last_cpu[0], now
            objects = len(StoreClient(settings.storage_port, BUCKET).list_keys("clusters/")) if store.is_dir() else 0
            return {"records": int(latencies.size), "p50_ms": float(np.percentile(latencies, 50)),
                    "p99_ms": float(np.percentile(latencies, 99)), "stored_objects": objects,
                    "broker_cores": used / span_s}

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        # in the worker's group, committing as it reads: what holds the log maintenance's retention back
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=fetch_wait_ms,
                                    group_id=settings.app_id, enable_auto_commit=True, auto_commit_interval_ms=1000)
        await producer.start()
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            consumer.seek(partition, 0)
            until = time.monotonic() + seconds
            _, windows = await asyncio.gather(_produce(producer, topic, rate, until),
                                              _consume(consumer, until + DRAIN_S, window))
        finally:
            await producer.stop()
            await consumer.stop()
    return windows


def run(rate: float = 1000.0, seconds: float = 60.0, fetch_wait_ms: int = 50, storage: str = "disk") -> dict:
    """Measure (module doc). Returns ``windows`` (a list of the per-window keys), the parameters and the
    machine. Raises cartwise.app.broker.BrokerError when the broker or its store cannot start."""
    scratch = Path(tempfile.mkdtemp(prefix="cartwise-broker-fetch-"))
    settings = Settings(data_dir=scratch, kafka_bootstrap=None, embedded_kafka_storage=storage, partitions=1,
                        embedded_kafka_port=pick_unused_port(), embedded_storage_port=pick_unused_port())
    try:
        windows = asyncio.run(_run(settings, rate, seconds, fetch_wait_ms))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"rate": rate, "seconds": seconds, "fetch_wait_ms": fetch_wait_ms, "storage": storage,
            "windows": windows, "machine": machine_info()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s produced")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fetch-wait-ms", type=int, default=50, help="the consumer's fetch long-poll bound")
    parser.add_argument("--storage", choices=["disk", "memory"], default="disk")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = run(args.rate, args.seconds, args.fetch_wait_ms, args.storage)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
