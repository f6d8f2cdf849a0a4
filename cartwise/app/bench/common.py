"""What every benchmark shares: machine facts, a loaded embedded service, and latency summaries."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import psutil
from hdrh.histogram import HdrHistogram
from portpicker import pick_unused_port

from cartwise.app.replay import publish, replay
from cartwise.app.service import Service, freeze_heap
from cartwise.datasets import Record, rees46_records
from cartwise.kafka_io import make_producer
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings, Topics
from encoders.export import find_pretrained


MIN_LOAD_RATE = 50.0  # events/s below which loading a benchmark's service counts as stuck
PACE_TICK_S = 0.01  # a paced load sends what is due this often


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User + system CPU seconds the ``processes`` have used so far, summed."""
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def say(console, text: str) -> None:
    """Log a progress line on ``console`` (a rich Console; None: quiet)."""
    if console is not None:
        console.log(text)


def publish_all(settings: Settings, records: Iterable[Record]) -> int:
    """Publish ``records`` to ``settings``' broker with a producer of their own (flushed and closed);
    returns how many were sent. Blocking."""
    producer = make_producer(settings)
    try:
        return replay(records, producer, settings.topics)
    finally:
        producer.close()


def refreshed(record: Record, event_id: str, **changes) -> Record:
    """``record`` as a new event: ``event_id``, event time now (UTC), and any other field ``changes``."""
    event = record.event.model_copy(update={"event_id": event_id, "event_time": datetime.now(timezone.utc), **changes})
    return Record(record.topic_field, record.key, event)


def send_paced(producer, topics: Topics, streams: list[tuple[float, Iterator[Record]]], stop: Callable[[], bool],
               on_send: Callable[[Record], None] | None = None, tick_s: float = PACE_TICK_S,
               on_failure: Callable[[Exception], None] | None = None) -> list[int]:
    """Publish each (rate in events/s, records) stream of ``streams`` at its rate through ``producer`` until
    ``stop()`` says so (checked every tick), and flush; returns how many records of each stream were sent.

    Paced by the wall clock, not by a sleep per event: every ``tick_s`` seconds each stream sends all the records
    due since the start (rate x elapsed), so a tick that comes late sends more and the rate holds as long as this
    thread gets the CPU to build and hand over the records. ``on_send`` sees each record once it is handed to the
    producer (a stream is read lazily: build its events there, with their times, :func:`refreshed`);
    ``on_failure`` is called (on the producer's thread) with the error of each record the broker never took."""
    sent, started = [0] * len(streams), time.monotonic()
    while not stop():
        elapsed = time.monotonic() - started
        for n, (rate, records) in enumerate(streams):
            for _ in range(int(elapsed * rate) - sent[n]):
                record = next(records)
                future = publish(producer, topics, record)
                if on_failure is not None:
                    future.add_errback(on_failure)
                sent[n] += 1
                if on_send is not None:
                    on_send(record)
        time.sleep(max(0.0, started + (int(elapsed / tick_s) + 1) * tick_s - time.monotonic()))
    producer.flush()
    return sent


def scratch_settings(settings: Settings, prefix: str, broker_storage: str = "disk") -> tuple[Path, Settings]:
    """A new scratch directory (``prefix`` names it, under the temp dir) and ``settings`` for a service of its
    own there: its DATA_DIR, the embedded broker on ``broker_storage`` and free ports, and a registry holding a
    copy of :func:`served_version` (none: the scratch service exports its own). The caller removes the directory."""
    scratch, version = Path(tempfile.mkdtemp(prefix=prefix)), served_version(settings.models_dir)
    copy_versions(settings.models_dir, [version] if version else [], scratch / "models")
    return scratch, settings.model_copy(update={
        "data_dir": scratch, "kafka_bootstrap": None, "embedded_kafka_storage": broker_storage,
        "embedded_kafka_port": pick_unused_port(), "embedded_storage_port": pick_unused_port(), "grpc_port": pick_unused_port()})


def latency_histogram() -> HdrHistogram:
    """Microsecond latencies from 1 µs to 60 s, 3 significant digits."""
    return HdrHistogram(1, 60_000_000, 3)


def summarize_ms(histogram: HdrHistogram, prefix: str = "") -> dict:
    """p50/p99/max of a µs histogram, in ms."""
    return {f"{prefix}p50_ms": histogram.get_value_at_percentile(50) / 1000,
            f"{prefix}p99_ms": histogram.get_value_at_percentile(99) / 1000,
            f"{prefix}max_ms": histogram.get_max_value() / 1000}


def percentiles_ms(seconds: list[float]) -> dict:
    """p50/p99 of durations in seconds, in ms (exact, for small samples)."""
    values = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


def served_version(models_dir: Path) -> str | None:
    """The version a benchmark serves, read from the user's registry: its active version, else its
    pretrained export; None when it holds neither (the scratch service then exports its own)."""
    if not models_dir.is_dir():
        return None
    registry = ModelRegistry(models_dir)
    return registry.active() or find_pretrained(registry)


def copy_versions(models_dir: Path, versions: list[str], root: Path) -> None:
    """Copy ``versions`` of the registry at ``models_dir`` into a new registry at ``root`` and activate
    the first there. The user's registry is only read. Raises RegistryError for a missing version."""
    source, target = ModelRegistry(models_dir), ModelRegistry(root)
    for version in versions:
        source.manifest(version)
        shutil.copytree(source.path(version), target.path(version))
    if versions:
        target.activate(versions[0])


@asynccontextmanager
async def loaded_service(settings: Settings, console, versions: list[str] | None = None,
                         records: Iterable[Record] | None = None):
    """The embedded service on free ports, a scratch index and a scratch registry holding copies of
    ``versions`` (the first active; default: :func:`served_version`), with ``records`` (default: all of
    REES46) replayed and consumed and the products collection optimized. Benchmarks never write into the
    user's registry."""
    scratch, default = Path(tempfile.mkdtemp(prefix="cartwise-bench-")), served_version(settings.models_dir)
    copy_versions(settings.models_dir, versions or ([default] if default else []), scratch / "models")
    settings = settings.model_copy(update={"data_dir": scratch, "kafka_bootstrap": None,
                                           "embedded_kafka_port": pick_unused_port(), "embedded_storage_port": pick_unused_port(),
                                           "grpc_port": pick_unused_port()})
    service = Service(settings)
    with console.status("starting the embedded service"):
        await service.start()
    try:
        with console.status("replaying the events and waiting for the worker"):
            sent = await asyncio.to_thread(publish_all, service.settings,
                                           records if records is not None else rees46_records())
            await service.wait_until_consumed(sent, timeout_s=max(300.0, sent / MIN_LOAD_RATE))
        with console.status("building the products' HNSW graph"):
            await service.wait_until_indexed()
        freeze_heap()  # the replayed records the caller still holds are no part of the service's own heap
        yield service
    finally:
        await service.stop()
        shutil.rmtree(scratch, ignore_errors=True)
