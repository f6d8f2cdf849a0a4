"""The benchmarks' plots for docs/benchmarks.md (matplotlib, Agg): Search latency during a swap, the
Search latency histogram, the Search latency-throughput sweep, ingest throughput over time, and the soak's
per-minute series."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


@contextmanager
def _figure(out: Path, width: float = 9.0, height: float = 4.0, rows: int = 1) -> Iterator:
    """One axes to draw on (``rows`` > 1: that many, stacked, sharing the x axis), saved as a PNG at ``out``
    (its folder made) when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(rows, 1, figsize=(width, height), sharex=rows > 1, squeeze=True)
    try:
        yield ax
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out, dpi=120)
    finally:
        plt.close(fig)


def _mark(ax, at: float, label: str, style: str = "--") -> None:
    ax.axvline(at, color="black", linestyle=style, linewidth=0.8)
    ax.text(at, ax.get_ylim()[1] * 0.95, f" {label}", fontsize=8, va="top")


def plot_timeline(records: list[dict], requested: float, switched: float, out: Path) -> None:
    """Latency of every request (the load generator's records) against its start time, coloured by the
    version that answered, with the swap's request and switch (Unix s) marked."""
    t0 = min(r["start"] for r in records)
    with _figure(out) as ax:
        for version in sorted({r["model_version"] for r in records if r["error"] is None}):
            rows = [r for r in records if r["model_version"] == version]
            ax.scatter([r["start"] - t0 for r in rows], [r["latency_ms"] for r in rows], s=2,
                       label=f"answered by {version}")
        ax.set(xlabel="seconds since the load started", ylabel="Search latency (ms)", yscale="log",
               title="gRPC Search during a model swap (backfill between the dashed lines)")
        for at, label in ((requested, "swap requested"), (switched, "switched")):
            _mark(ax, at - t0, label)
        ax.legend(loc="upper left", markerscale=4)


def plot_latency_histogram(latencies_ms: Sequence[float], floor_p50_ms: float, goal_p99_ms: float, title: str,
                           out: Path) -> None:
    """Histogram of OK answers' latencies (ms, log-spaced bins) with their p50 and p99, the floor's p50 and
    the p99 goal marked."""
    values = np.asarray(latencies_ms, dtype=float)
    p50, p99 = np.percentile(values, [50, 99])
    low, high = min(values.min(), floor_p50_ms), max(values.max(), goal_p99_ms)
    with _figure(out) as ax:
        ax.hist(values, bins=np.geomspace(low * 0.9, high * 1.1, 60), color="tab:blue")
        ax.set(xscale="log", xlabel="Search latency (ms, log scale)", ylabel="answers", title=title)
        for at, label, colour, style in ((floor_p50_ms, f"floor p50 {floor_p50_ms:.1f} ms", "grey", ":"),
                                         (goal_p99_ms, f"goal p99 {goal_p99_ms:g} ms", "tab:green", "-."),
                                         (p50, f"p50 {p50:.1f} ms", "black", "--"),
                                         (p99, f"p99 {p99:.1f} ms", "tab:red", "--")):
            ax.axvline(at, color=colour, linestyle=style, linewidth=1.0, label=label)
        ax.legend(loc="upper left", fontsize=8)


def plot_sweep(steps: list[dict], knee_qps: float, p99_limit_ms: float, title: str, out: Path) -> None:
    """A latency-throughput sweep (cartwise.app.bench.search.sweep_step rows) against the offered rate, in two
    stacked panels: the answered p50 and p99 (ms, log scale) with the ``p99_limit_ms`` line; the served rate
    next to the offered one and the share refused (right axis). The knee is marked when above 0."""
    offered = [step["target_qps"] for step in steps]
    with _figure(out, 8.0, 7.0, rows=2) as (latency, rate):
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            latency.plot(offered, [np.nan if step[key] is None else step[key] for step in steps], marker="o",
                         label=f"answered {label}")
        latency.axhline(p99_limit_ms, color="tab:red", linestyle="-.", label=f"p99 limit {p99_limit_ms:g} ms")
        latency.set(yscale="log", ylabel="Search latency (ms, log scale)", title=title)
        rate.plot(offered, offered, color="grey", linestyle=":", label="offered")
        rate.plot(offered, [step["served_qps"] for step in steps], marker="o", label="served (OK)")
        rate.set(xlabel="offered Search/s", ylabel="answers/s", ylim=(0, None))
        refused = rate.twinx()
        width = 0.3 * min(np.diff(offered), default=20.0)
        refused.bar(offered, [100 * step["refused_rate"] for step in steps], width=width,
                    color="tab:red", alpha=0.3, label="refused (RESOURCE_EXHAUSTED)")
        refused.set(ylabel="refused (%)", ylim=(0, 100))
        for ax in (latency, rate):
            if knee_qps > 0:
                _mark(ax, knee_qps, f"knee {knee_qps:g}/s")
            ax.legend(loc="upper left", fontsize=8)
        refused.legend(loc="upper right", fontsize=8)


def plot_throughput(samples: list[tuple[float, int]], raw_per_s: float, goal_per_s: float, title: str,
                    out: Path, bucket_s: float = 1.0) -> None:
    """Events consumed per second over time from (seconds since the window began, events consumed so far)
    ``samples``, in ``bucket_s`` buckets, next to the raw read's rate and the goal."""
    times = np.array([t for t, _ in samples])
    counts = np.array([n for _, n in samples], dtype=float)
    edges = np.append(np.arange(0.0, times[-1], bucket_s), times[-1])  # the last bucket may be shorter
    rates = np.diff(np.interp(edges, times, counts)) / np.diff(edges)
    with _figure(out) as ax:
        ax.stairs(rates, edges, label="worker (behavior events/s)")
        ax.axhline(goal_per_s, color="tab:green", linestyle="-.", label=f"goal {goal_per_s:,.0f}/s")
        ax.set(xlabel="seconds since the first event was consumed", ylabel="events/s", title=title,
               ylim=(0, max(goal_per_s, rates.max()) * 1.15))
        ax.text(0.99, 0.97, f"raw aiokafka read of the same topics: {raw_per_s:,.0f}/s", transform=ax.transAxes,
                ha="right", va="top", fontsize=8)
        ax.legend(loc="lower right")


def plot_soak(series: list[dict], goal_ms: float, title: str, out: Path) -> None:
    """The soak's per-minute ``series`` (cartwise.app.bench.soak) in four stacked panels against the minute:
    freshness p50 and p99 (ms, log scale) with the ``goal_ms`` line, the broker's batch objects (all topics,
    and the fullest partition's), the bytes under DATA_DIR/broker, and the CPU cores of the service and the
    broker. A minute without a figure is a gap."""
    def values(key: str) -> list[float]:
        return [np.nan if row.get(key) is None else row[key] for row in series]

    minutes = [row["minute"] for row in series]
    with _figure(out, 9.0, 11.0, rows=4) as (fresh, objects, disk, cpu):
        fresh.plot(minutes, values("freshness_p50_ms"), marker=".", label="p50")
        fresh.plot(minutes, values("freshness_p99_ms"), marker=".", label="p99")
        fresh.axhline(goal_ms, color="tab:green", linestyle="-.", label=f"goal {goal_ms:,.0f} ms")
        fresh.set(yscale="log", ylabel="freshness (ms)", title=title)
        objects.plot(minutes, values("objects"), marker=".", label="all topics")
        if any(row.get("objects_per_partition_max") is not None for row in series):
            objects.plot(minutes, values("objects_per_partition_max"), marker=".", label="fullest partition")
        objects.set(ylabel="batch objects")
        disk.plot(minutes, np.asarray(values("disk_bytes")) / 2**20, marker=".", color="tab:purple")
        disk.set(ylabel="DATA_DIR/broker (MiB)")
        cpu.plot(minutes, values("service_cpu_cores"), marker=".", label="service")
        cpu.plot(minutes, values("broker_cpu_cores"), marker=".", label="broker (Tansu + s3rver)")
        cpu.set(ylabel="CPU (cores)", xlabel="minute of load", ylim=(0, None))
        cpu.xaxis.get_major_locator().set_params(integer=True)
        for ax in (fresh, objects, cpu):
            ax.legend(loc="upper left", fontsize=8)
