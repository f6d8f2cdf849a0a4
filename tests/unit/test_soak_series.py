"""The soak bench's pure parts: per-minute aggregation of probes and samples, the broker's objects and bytes
on disk, and the run's reductions (no service)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cartwise.app.bench.consistency import Expected
from cartwise.app.bench.plots import plot_soak
from cartwise.app.bench.soak import (
    OBJECT_SUFFIX,
    BrokerDisk,
    Probe,
    Sample,
    minute_of_probe,
    minute_of_sample,
    minute_row,
    minute_series,
    progress_line,
    summarize,
)
from cartwise.datasets import Record
from cartwise.events import BehaviorEvent, ProductUpsert

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample(t_s: float, objects: int = 0, fullest: int = 0, disk: int = 0, cpu: float = 0.0, broker_cpu: float = 0.0,
           rss: int = 0, events: int = 0) -> Sample:
    return Sample(t_s, objects, fullest, disk, cpu, broker_cpu, rss, rss // 2, events)


def test_minutes_of_probes_and_samples():
    assert [minute_of_probe(t) for t in (0.0, 59.99, 60.0, 60.001, 179.0)] == [1, 1, 2, 2, 3]
    # a sample closes the minute it was due at the end of, even a moment late; the baseline is minute 0
    assert [minute_of_sample(t) for t in (0.002, 5.0, 60.0, 60.4, 61.5, 120.0)] == [0, 1, 1, 1, 2, 2]


def test_minute_row_percentiles_gauges_and_rates():
    probes = [Probe(k + 0.01, 0.1 * (k + 1)) for k in range(10)] + [Probe(20.0, None), Probe(60.5, 0.2)]
    samples = [sample(0.0, objects=0, cpu=100.0, broker_cpu=10.0, rss=1000, events=0),
               sample(30.0, objects=40, fullest=30, disk=4096, cpu=115.0, broker_cpu=25.0, rss=3000, events=9000),
               sample(60.01, objects=70, fullest=50, disk=8192, cpu=130.0, broker_cpu=40.0, rss=2000, events=18000),
               sample(120.0, objects=90, fullest=60, disk=9000, cpu=160.0, broker_cpu=40.0, rss=2500, events=36000)]
    first = minute_row(1, probes, samples)
    assert first["minute"] == 1 and first["probes"] == 11 and first["missed"] == 1
    # numpy's linear percentiles of 100, 200, ..., 1000 ms; the missed probe is not among them
    assert first["freshness_p50_ms"] == pytest.approx(550.0)
    assert first["freshness_p99_ms"] == pytest.approx(991.0)
    # gauges from the minute's last sample, memory at its peak, rates from the baseline to that sample
    assert (first["objects"], first["objects_per_partition_max"], first["disk_bytes"]) == (70, 50, 8192)
    assert (first["rss_bytes"], first["broker_rss_bytes"]) == (3000, 1500)
    assert first["service_cpu_cores"] == pytest.approx(30.0 / 60.01)
    assert first["broker_cpu_cores"] == pytest.approx(30.0 / 60.01)
    assert first["events_per_s"] == pytest.approx(18000 / 60.01)
    second = minute_row(2, probes, samples)
    assert second["freshness_p50_ms"] == pytest.approx(200.0) and second["probes"] == 1
    assert second["service_cpu_cores"] == pytest.approx(30.0 / 59.99)
    assert second["broker_cpu_cores"] == pytest.approx(0.0)
    assert second["events_per_s"] == pytest.approx(18000 / 59.99)


def test_a_minute_without_figures_is_none_not_zero():
    row = minute_row(3, [Probe(130.0, None)], [sample(0.0), sample(60.0)])
    assert row["missed"] == 1 and row["freshness_p99_ms"] is None
    assert all(row[k] is None for k in ("objects", "disk_bytes", "rss_bytes", "service_cpu_cores", "events_per_s"))
    assert "freshness p50 - p99 - (1/1 missed)" in progress_line(row, 3)


def test_reductions_first_last_max_minute_and_end():
    minutes = 12
    # minute m's probes take m x 100 ms, and minute 7 has two slow ones beside them
    probes = [Probe(60.0 * (m - 1) + s, 0.1 * m) for m in range(1, minutes + 1) for s in range(60)]
    probes += [Probe(60.0 * 6 + 30.5, 4.0), Probe(60.0 * 6 + 31.5, 4.0), Probe(60.0 * 11 + 1.5, None)]
    samples = [sample(5.0 * k, objects=10 * k, fullest=k if k != 50 else 500, disk=1000 * k) for k in range(145)]
    samples.append(sample(725.0, objects=1000, fullest=3, disk=100))  # after the load: the end, smaller than the max
    series = minute_series(probes, samples, minutes)
    assert [row["minute"] for row in series] == list(range(1, minutes + 1))
    figures = summarize(probes, samples, series, minutes)
    assert figures["freshness_p99_ms_first"] == pytest.approx(500.0)  # minutes 1-5 pooled
    assert figures["freshness_p99_ms_last"] == pytest.approx(1200.0)  # minutes 8-12
    assert figures["freshness_p99_ms_max_minute"] == pytest.approx(max(r["freshness_p99_ms"] for r in series))
    assert series[6]["freshness_p99_ms"] == pytest.approx(4000.0)  # minute 7 carries the slow probes
    assert figures["freshness_p99_ms_max_minute"] == series[6]["freshness_p99_ms"]
    assert figures["missed"] == 1 and figures["probes"] == len(probes)
    assert (figures["objects_end"], figures["objects_max"]) == (1000, 1440)
    assert figures["objects_per_partition_max"] == 500
    assert (figures["disk_bytes_end"], figures["disk_bytes_max"]) == (100, 144_000)


def test_short_runs_pool_the_whole_run_and_empty_runs_give_none():
    probes = [Probe(1.0, 0.3), Probe(70.0, 0.5)]
    figures = summarize(probes, [], minute_series(probes, [], 2), 2)
    assert figures["freshness_p99_ms_first"] == figures["freshness_p99_ms_last"]
    assert figures["objects_end"] is None and figures["disk_bytes_max"] is None
    assert summarize([], [], [], 1)["freshness_p99_ms_first"] is None


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def _allocated(root: Path) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in root.rglob("*") if p.is_file())


def test_broker_disk_counts_batch_objects_per_partition_and_every_byte(tmp_path):
    root = tmp_path / "broker"
    assert BrokerDisk(root).measure() == (0, 0, 0)  # nothing written yet
    bucket = root / "cartwise" / "clusters" / "tansu" / "topics"
    partitions = [bucket / "behavior.views" / "partitions" / "0000000000",
                  bucket / "catalog.products" / "partitions" / "0000000000"]
    for n, partition in enumerate(partitions):
        for offset in range(3 + 2 * n):  # s3rver's three files per object; only one is the object
            stem = partition / "records" / f"{offset:020d}.batch"
            _write(stem.with_name(stem.name + "._S3rver_object"), 5000)
            _write(stem.with_name(stem.name + "._S3rver_metadata.json"), 200)
            _write(stem.with_name(stem.name + "._S3rver_object.md5"), 32)
        _write(partition / "watermark.json._S3rver_object", 100)  # not under records/: not a batch object
    _write(root / "cartwise" / "clusters" / "tansu" / "groups" / "cartwise.json._S3rver_object", 300)
    assert OBJECT_SUFFIX == ".batch._S3rver_object"
    disk = BrokerDisk(root)
    assert disk.measure() == (8, 5, _allocated(root))
    # retention removes a partition's old objects, new ones arrive, a file outside records/ grows
    for suffix in ("._S3rver_object", "._S3rver_metadata.json", "._S3rver_object.md5"):
        (partitions[1] / "records" / f"{0:020d}.batch{suffix}").unlink()
    _write(partitions[0] / "records" / f"{99:020d}.batch._S3rver_object", 70_000)
    _write(root / "cartwise" / "clusters" / "tansu" / "groups" / "cartwise.json._S3rver_object", 90_000)
    assert disk.measure() == (8, 4, _allocated(root))
    assert BrokerDisk(root).measure() == disk.measure()  # a fresh walker agrees with the one that kept its stats


def test_expected_built_as_events_are_sent_merges_like_one_list():
    t = "2026-01-01T00:00:{:02d}Z"

    def cart(user: str, n: int) -> Record:
        return Record("carts", user, BehaviorEvent(event_id=f"e{user}{n}", event_time=t.format(n), event_type="cart",
                                                   user_id=user, product_id="p1"))

    def upsert(pid: str, n: int, price: float) -> Record:
        return Record("catalog", pid, ProductUpsert(event_id=f"c{pid}{n}", event_time=t.format(n), product_id=pid,
                                                    title="x", price=price))

    mine, theirs = [upsert("p1", 1, 1.0), cart("a", 2)], [upsert("p1", 3, 2.0), cart("b", 4), cart("b", 5)]
    expected, other = Expected.of(mine, 50), Expected(50)
    for record in theirs:
        other.apply(record)
    expected.merge(other)
    whole = Expected.of(mine + theirs, 50)
    assert expected.products == whole.products and expected.products["p1"].price == 2.0
    assert {u: h.digest() for u, h in expected.histories.items()} == {u: h.digest() for u, h in whole.histories.items()}
    with pytest.raises(ValueError):
        expected.merge(Expected.of([cart("a", 9)], 50))


def test_soak_plot_writes_a_png_with_gaps(tmp_path):
    probes = [Probe(float(s), 0.2 + (s % 7) / 10) for s in range(180)]
    samples = [sample(5.0 * k, objects=20 * k, fullest=7 * k, disk=2**20 * k, cpu=0.9 * 5 * k, broker_cpu=0.3 * 5 * k)
               for k in range(25)]  # minute 3 has no sample: a gap
    plot_soak(minute_series(probes, samples, 3), 1000.0, "soak", tmp_path / "img" / "soak.png")
    assert (tmp_path / "img" / "soak.png").read_bytes()[:8] == PNG_MAGIC
