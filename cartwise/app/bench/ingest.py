"""``cartwise bench ingest``: how fast the stream worker takes catalog upserts and behavior events, next to
a raw aiokafka read of the same topics on the same broker in the same run (issue #13).

Two phases on one scratch embedded broker (disk, the default, or memory), each a backlog produced before
the worker starts, so the figure is the worker's rate and not the producer's:

1. the REES46 catalog upserts, consumed by a fresh service (products/s);
2. ``events`` behavior events in REES46 shapes: REES46's views, carts and purchases in order, repeated with
   each repetition's users renamed (so there are many users and no event is a duplicate), consumed by a
   second service on the same broker and index after a raw read of them (events/s).

A rate is events over the time from the first event consumed to the last (the worker's start-up, a
consumer-group join and Table recovery, is left out). CPU is the service process's own (user + system,
psutil) over the same window, per event; the broker's processes (Tansu and its store) are reported
apart. At the end the service's histories and user vectors are compared with a rebuild from the events
(cartwise.app.bench.consistency): the fast path must compute what the slow path does."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from cartwise.app.bench.common import cpu_seconds, publish_all, say, scratch_settings
from cartwise.app.bench.consistency import Expected, compare, stored_histories
from cartwise.app.bench.plots import plot_throughput
from cartwise.app.broker import EmbeddedBroker, embedded_broker
from cartwise.app.service import Service
from cartwise.datasets import Record, rees46_records
from cartwise.kafka_io import ensure_topics
from cartwise.machine import machine_info
from cartwise.settings import Settings

SAMPLE_S = 0.01
PROGRESS_S = 0.1  # how often the throughput-over-time samples are taken
GOAL_EVENTS_PER_S = 5000.0  # issue #13, marked on the plot


def behavior_load(events: int, rows: int | None = None) -> list[Record]:
    """``events`` behavior records in REES46 shapes (module doc) from its first ``rows`` rows (None: all):
    repetition k renames user u to ``u~k`` and event e to ``e~k``; event times are kept, so each user's
    events stay in order."""
    base = [r for r in rees46_records(limit=rows) if r.topic_field != "catalog"]
    out: list[Record] = []
    for k in range(-(-events // len(base))):
        for record in base[:events - len(out)]:
            user = f"{record.key}~{k}"
            event = record.event.model_copy(update={"user_id": user, "event_id": f"{record.event.event_id}~{k}"})
            out.append(Record(record.topic_field, user, event))
    return out


@dataclass
class Window:
    """Wall seconds and CPU seconds of the service and broker processes over one consumption window, and
    ``samples``: (seconds since the window began, events consumed by then), every :data:`PROGRESS_S`."""

    events: int
    seconds: float
    cpu_s: float
    broker_cpu_s: float
    samples: list[tuple[float, int]]

    def rates(self, plural: str, singular: str) -> dict:
        """``{plural}_per_s``, ``cpu_ms_per_{singular}`` and ``broker_cpu_ms_per_{singular}``."""
        return {f"{plural}_per_s": self.events / self.seconds,
                f"cpu_ms_per_{singular}": 1000 * self.cpu_s / self.events,
                f"broker_cpu_ms_per_{singular}": 1000 * self.broker_cpu_s / self.events}


async def consume_window(service: Service, events: int, broker: EmbeddedBroker, timeout_s: float = 600.0) -> Window:
    """Start ``service`` and time its worker through ``events`` backlogged events (module doc).
    Raises TimeoutError."""
    me, children = psutil.Process(), [psutil.Process(pid) for pid in broker.pids()]
    await service.start()
    deadline = time.monotonic() + timeout_s
    while service.worker.consumed == 0:
        await asyncio.sleep(SAMPLE_S)
    started, cpu, broker_cpu = time.perf_counter(), cpu_seconds([me]), cpu_seconds(children)
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(_sample(service, started, samples))
    try:
        await service.wait_until_consumed(events, max(1.0, deadline - time.monotonic()))
    finally:
        sampler.cancel()
    seconds = time.perf_counter() - started
    return Window(events, seconds, cpu_seconds([me]) - cpu, cpu_seconds(children) - broker_cpu, [*samples, (seconds, events)])


async def _sample(service: Service, started: float, samples: list[tuple[float, int]]) -> None:
    while True:
        samples.append((time.perf_counter() - started, service.worker.consumed))
        await asyncio.sleep(PROGRESS_S)


async def raw_read(settings: Settings, topics: tuple[str, ...], events: int) -> float:
    """Seconds a group-less aiokafka consumer takes to read ``events`` records of ``topics`` from the start
    (the floor: fetch and decode, nothing applied)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=settings.fetch_max_wait_ms)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        started, read = time.perf_counter(), 0
        while read < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            read += sum(len(batch) for batch in batches.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def run_ingest_bench(settings: Settings, events: int = 50_000, broker_storage: str = "disk",
                           console=None, rows: int | None = None, plot: Path | None = None) -> dict:
    """The two phases of the module doc on a scratch service, from the first ``rows`` REES46 rows (None:
    all); returns the keys of issue #13 (events_per_s, catalog_products_per_s, raw_events_per_s, ratio,
    cpu_ms_per_event, broker) with the per-product CPU, the broker's CPU, and the consistency check (lost,
    double_applied, mismatched_users, mismatched_products: all 0 when the fast path computes what the slow
    path does). With ``plot``, the behavior phase's events/s over time is written there (PNG)."""
    scratch, settings = scratch_settings(settings, "cartwise-ingest-", broker_storage)
    catalog = [r for r in rees46_records(limit=rows) if r.topic_field == "catalog"]
    behavior = behavior_load(events, rows)
    broker = embedded_broker(settings).start()
    try:
        ensure_topics(settings)
        say(console, f"catalog phase: {len(catalog)} upserts")
        await asyncio.to_thread(publish_all, settings, catalog)
        service = Service(settings, broker=broker)
        try:
            products = await consume_window(service, len(catalog), broker)
        finally:
            await service.stop()
        say(console, f"behavior phase: {len(behavior)} events")
        await asyncio.to_thread(publish_all, settings, behavior)
        raw_s = await raw_read(settings, settings.topics.behavior, len(behavior))
        service = Service(settings, broker=broker)
        try:
            window = await consume_window(service, len(behavior), broker)
        finally:
            await service.stop()
        histories = await asyncio.to_thread(stored_histories, settings)
        check = compare(settings, Expected.of(catalog + behavior, settings.personalization.max_history), histories)
    finally:
        broker.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    raw_per_s = len(behavior) / raw_s
    if plot:
        plot_throughput(window.samples, raw_per_s, GOAL_EVENTS_PER_S,
                        f"Stream worker ingest, {len(behavior):,} behavior events, {broker_storage} broker", plot)
    return {**window.rates("events", "event"), **products.rates("catalog_products", "catalog_product"),
            "raw_events_per_s": raw_per_s, "ratio": window.events / window.seconds / raw_per_s, "events": len(behavior),
            "catalog_products": len(catalog), "broker": broker_storage, **check, "machine": machine_info(),
            "command": f"cartwise bench ingest --events {events} --broker {broker_storage}"
                       + (f" --plot {plot}" if plot else "") + " --json"}
