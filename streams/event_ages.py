"""How old events are at each stage of the stream worker: the freshness breakdown of issue #28.

An event's age is measured from its Kafka record timestamp (the producer's send time: CreateTime, on this
machine's clock for the benches) to two stages of its agent's batch:

- ``batched``: the agent's batch window closed and the batch starts (broker, fetch and window behind it);
- ``applied``: the batch's writes are done: its users and products are what Search reads.

Kept per (agent, stage) in an HdrHistogram of fixed size (1 ms .. 1 h, 2 significant digits), so a worker
that runs for weeks holds the same few kilobytes; exported by cartwise/metrics.py as a Prometheus histogram
and read by ``cartwise bench freshness``."""

from __future__ import annotations

import threading
import time
from typing import Iterable, Sequence

from hdrh.histogram import HdrHistogram

STAGES = ("batched", "applied")
_MAX_MS = 3_600_000


class EventAges:
    """Per (agent, stage) histograms of event ages, in ms (module doc). The worker records on its event loop
    while the metrics endpoint reads from its own thread: both under one lock, since an HdrHistogram read
    during a write can fail or disagree with its own total."""

    def __init__(self) -> None:
        self._histograms: dict[tuple[str, str], HdrHistogram] = {}
        self._lock = threading.Lock()

    def observe(self, agent: str, stage: str, timestamps_s: Iterable[float], now_s: float | None = None) -> None:
        """Record the age at ``stage`` of events stamped ``timestamps_s`` (s since the epoch); a stamp ahead of
        ``now_s`` (another clock) counts as age 0."""
        now_ms = (time.time() if now_s is None else now_s) * 1000
        ages = [min(_MAX_MS, max(0, int(now_ms - stamp * 1000))) for stamp in timestamps_s]
        with self._lock:
            histogram = self._histograms.get((agent, stage))
            if histogram is None:
                histogram = self._histograms[agent, stage] = HdrHistogram(1, _MAX_MS, 2)
            for age in ages:
                histogram.record_value(age)

    def reset(self) -> None:
        """Forget what was recorded (a benchmark's measurement starts after its set-up)."""
        with self._lock:
            self._histograms.clear()

    def cumulative(self, bounds_ms: Sequence[float]) -> list[tuple[tuple[str, str], list[int], int, float]]:
        """Per (agent, stage), sorted: events at or below each of ``bounds_ms`` (cumulative counts), the count
        and the sum of ages in ms; one consistent reading (what a Prometheus histogram needs)."""
        out = []
        with self._lock:
            for key, histogram in sorted(self._histograms.items()):
                counts = [0] * len(bounds_ms)
                for item in histogram.get_recorded_iterator():
                    for i, bound in enumerate(bounds_ms):
                        if item.value_iterated_to <= bound:
                            counts[i] += item.count_added_in_this_iter_step
                total = histogram.get_total_count()
                out.append((key, counts, total, histogram.get_mean_value() * total))
        return out

    def summary(self, agent: str, stage: str) -> dict:
        """``count``, ``mean_ms``, ``p50_ms`` and ``p99_ms`` of ``agent``'s events at ``stage`` (zeros when none)."""
        with self._lock:
            histogram = self._histograms.get((agent, stage))
            if histogram is None or histogram.get_total_count() == 0:
                return {"count": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
            return {"count": histogram.get_total_count(), "mean_ms": histogram.get_mean_value(),
                    "p50_ms": float(histogram.get_value_at_percentile(50)),
                    "p99_ms": float(histogram.get_value_at_percentile(99))}
