"""What every benchmark shares: machine facts, a loaded embedded service, and latency summaries."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from hdrh.histogram import HdrHistogram

from cartwise.datasets import rees46_records
from cartwise.replay import make_producer, replay
from cartwise.service import Service
from cartwise.settings import Settings


def machine_info() -> dict:
    """CPU model, cores, Python and ONNX Runtime versions of this machine."""
    import onnxruntime

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@asynccontextmanager
async def loaded_service(settings: Settings, console):
    """The embedded service on free ports and a scratch index, with all of REES46 replayed and consumed."""
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="cartwise-bench-"))
    (scratch / "models").symlink_to(settings.models_dir.resolve())  # share the exported encoder
    settings = settings.model_copy(update={"data_dir": scratch, "kafka_bootstrap": None,
                                           "embedded_kafka_port": free_port(), "grpc_port": free_port()})
    service = Service(settings)
    with console.status("starting the embedded service"):
        await service.start()
    try:
        with console.status("replaying REES46 and waiting for the worker"):
            producer = make_producer(service.settings.kafka_bootstrap)
            sent = await asyncio.to_thread(replay, rees46_records(), producer, service.settings.topics)
            producer.close()
            await service.wait_until_consumed(sent, timeout_s=300)
        yield service
    finally:
        await service.stop()
        shutil.rmtree(scratch, ignore_errors=True)
