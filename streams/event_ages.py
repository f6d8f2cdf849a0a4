"""How old events are at each stage of the stream worker: the freshness breakdown of issue #28.

An event's age is measured from its Kafka record timestamp (the producer's send time: CreateTime, on this
machine's clock for the benches) to two stages of its agent's batch:

- ``batched``: the agent's batch window closed and the batch starts (broker, fetch and window behind it);
- ``applied``: the batch's writes are done: its users and products are what Search reads.

Kept per (agent, stage) in an HdrHistogram of fixed size (1 ms .. 1 h, 2 significant digits), so a worker
that runs for weeks holds the same few kilobytes; exported by cartwise/metrics.py as a Prometheus histogram
and read by ``cartwise bench freshness``."""

from __future__ import annotations

import time
from typing import Iterable

from hdrh.histogram import HdrHistogram

STAGES = ("batched", "applied")
_MAX_MS = 3_600_000


class EventAges:
    """Per (agent, stage) histograms of event ages, in ms (module doc)."""

    def __init__(self) -> None:
        self.histograms: dict[tuple[str, str], HdrHistogram] = {}

    def observe(self, agent: str, stage: str, timestamps_s: Iterable[float], now_s: float | None = None) -> None:
        """Record the age at ``stage`` of events stamped ``timestamps_s`` (s since the epoch); a stamp ahead of
        ``now_s`` (another clock) counts as age 0."""
        now_ms = (time.time() if now_s is None else now_s) * 1000
        histogram = self.histograms.get((agent, stage))
        if histogram is None:
            histogram = self.histograms[agent, stage] = HdrHistogram(1, _MAX_MS, 2)
        for stamp in timestamps_s:
            histogram.record_value(min(_MAX_MS, max(0, int(now_ms - stamp * 1000))))

    def reset(self) -> None:
        """Forget what was recorded (a benchmark's measurement starts after its set-up)."""
        self.histograms.clear()

    def summary(self, agent: str, stage: str) -> dict:
        """``count``, ``mean_ms``, ``p50_ms`` and ``p99_ms`` of ``agent``'s events at ``stage`` (zeros when none)."""
        histogram = self.histograms.get((agent, stage))
        if histogram is None or histogram.get_total_count() == 0:
            return {"count": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
        return {"count": histogram.get_total_count(), "mean_ms": histogram.get_mean_value(),
                "p50_ms": float(histogram.get_value_at_percentile(50)),
                "p99_ms": float(histogram.get_value_at_percentile(99))}
