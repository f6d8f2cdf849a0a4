"""The benchmarks' plots and the figures they are drawn from (pure logic, no service)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cartwise.app.bench.plots import plot_latency_histogram, plot_sweep, plot_throughput, plot_timeline
from cartwise.app.bench.search import answered_latencies

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_answered_latencies_keep_only_ok_answers(tmp_path):
    rows = [{"start": 1.0, "latency_ms": 4.5, "model_version": "v2", "index_version": "v2", "error": None},
            {"start": 1.1, "latency_ms": None, "model_version": None, "index_version": None,
             "error": "RESOURCE_EXHAUSTED"},
            {"start": 1.2, "latency_ms": 12.0, "model_version": "v2", "index_version": "v2", "error": None}]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert answered_latencies(path) == [4.5, 12.0]


def test_every_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    plot_latency_histogram(list(rng.lognormal(2.0, 0.5, 500)), 6.0, 15.0, "search", tmp_path / "a" / "hist.png")
    samples = [(0.1 * k, 250 * k) for k in range(40)]
    plot_throughput(samples, 16_000.0, 5_000.0, "ingest", tmp_path / "ingest.png")
    records = [{"start": 100.0 + k / 50, "latency_ms": 5.0 + k % 7, "model_version": "v2" if k < 100 else "v3",
                "index_version": None, "error": None} for k in range(200)]
    plot_timeline(records, 101.0, 102.0, tmp_path / "swap.png")
    steps = [{"target_qps": q, "served_qps": min(q, 180.0), "refused_rate": max(0.0, 1 - 180.0 / q),
              "p50_ms": 5.0 + q / 50, "p99_ms": None if q == 400 else 10.0 + q / 5} for q in (50, 100, 200, 400)]
    plot_sweep(steps, 100.0, 50.0, "sweep", tmp_path / "sweep.png")  # a step with no answer: a gap
    for name in ("a/hist.png", "ingest.png", "swap.png", "sweep.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_throughput_buckets_are_events_per_second(tmp_path, monkeypatch):
    drawn = {}

    class Axes:  # records what plot_throughput draws instead of drawing it
        def stairs(self, values, edges, **_):
            drawn["values"], drawn["edges"] = list(values), list(edges)

        def __getattr__(self, _):
            return lambda *a, **k: None

    from contextlib import contextmanager

    import cartwise.app.bench.plots as plots

    monkeypatch.setattr(plots, "_figure", contextmanager(lambda out: (yield Axes())))
    # 2,000 events/s for 2 s, then 500 events/s for 1.5 s, sampled every 0.1 s: the last bucket is half a second
    samples = [(t / 10, 200 * t if t <= 20 else 4000 + 50 * (t - 20)) for t in range(36)]
    plot_throughput(samples, 16_000.0, 5_000.0, "ingest", tmp_path / "x.png")
    assert drawn["edges"] == pytest.approx([0.0, 1.0, 2.0, 3.0, 3.5])
    assert drawn["values"] == pytest.approx([2000.0, 2000.0, 500.0, 500.0])
