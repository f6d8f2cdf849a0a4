"""``cartwise bench soak``: steady mixed load on one scratch `cartwise serve` with its durable default broker
(Tansu on s3rver) for ``minutes``: what grows (the broker's batch objects, its bytes on disk, memory), whether
freshness holds, and how long a kill -9 at the end takes to recover from (issue #28).

Set-up: a scratch DATA_DIR under the temp dir with free ports and a copy of the served model
(common.scratch_settings), `cartwise serve` run as a child in a process group of its own (recovery.ServeProcess;
``retention_s`` is its CARTWISE_RETENTION_S), and the REES46 catalog published and consumed.

Load, for ``minutes`` from T0 (minute 1 is [T0, T0 + 60 s), the first full minute of load):

- behavior events in REES46 shapes at ``rate``/s: its views, carts and purchases in file order, cycled, over
  its own users and products (a bounded key set), each sent as a new event (new id, event time now);
- catalog upserts of existing REES46 products at ``catalog_rate``/s, cycling through the catalog: a new price
  (REES46's, -10 % to +10 %) and in stock or not (1 in 10 out of stock);
- both from a process of their own (:func:`_produce_load`: a kafka-python producer batching for
  :data:`LOAD_LINGER_MS`, paced by the wall clock, common.send_paced), which folds every event it sends into
  the state the service must hold (consistency.Expected);
- Search at ``qps``/s, open loop, from the load-generator process (loadgen, the REES46 queries of
  ``bench search``);
- a freshness probe every second, as ``bench freshness`` has them (freshness.probe: a cart of a new user and a
  new product, alternately), each polled until Search shows it; one not shown within PROBE_TIMEOUT_S is missed;
  outstanding probes share the poll rate of one (freshness.PollBudget), so slow answers do not multiply the
  probes' own Search load;
- a :class:`Sample` every :data:`SAMPLE_S` (:class:`Sampler`), aggregated per minute (:func:`minute_series`).

End: the load stops, a last sample is taken, the service's process group is killed (SIGKILL) and started
again: seconds from that spawn to SERVING and to lag 0 (the worker group caught up on every source topic); then
the recovery bench's check (lost, double_applied, mismatched_users, mismatched_products against a rebuild from
every event sent: the catalog, the load and the probes)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import multiprocessing
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from kafka import KafkaProducer

from cartwise.app.bench.common import cpu_seconds, percentiles_ms, publish_all, refreshed, say, scratch_settings, \
    send_paced
from cartwise.app.bench.consistency import Expected
from cartwise.app.bench.freshness import PROBE_TIMEOUT_S, PollBudget, probe, time_to_visible
from cartwise.app.bench.loadgen import offer
from cartwise.app.bench.plots import plot_soak
from cartwise.app.bench.recovery import ServeProcess, check_against, wait_caught_up
from cartwise.app.bench.search import rees46_queries
from cartwise.client import AsyncClient
from cartwise.datasets import Record, rees46_records
from cartwise.kafka_io import consumer_lag, make_producer, producer_config
from cartwise.machine import machine_info
from cartwise.settings import Settings

SAMPLE_S = 5.0  # a sample this often
SAMPLE_SLACK_S = 1.0  # a sample taken up to this late still closes the minute it was due at the end of
WINDOW_MINUTES = 5  # freshness_p99_ms_first / _last pool the first / last this many minutes
GOAL_FRESHNESS_MS = 1000.0  # marked on the plot
LOAD_LINGER_MS = 50  # the load producer batches this long (kafka-python linger.ms)
LOAD_BATCH_BYTES = 256 * 1024  # and up to this much per partition (batch.size)
WARMUP_S = 3.0  # between starting the Search load generator (it connects and warms up) and T0
START_TIMEOUT_S = 300.0  # the first start may export and quantize the encoder
RESTART_TIMEOUT_S = 600.0
PRICE_CHANGE = 0.10  # a catalog upsert's price: REES46's, give or take this share
OUT_OF_STOCK = 0.1  # share of catalog upserts out of stock
OBJECT_SUFFIX = ".batch._S3rver_object"  # s3rver's file of a Tansu batch object (beside .md5 and metadata)
RECORDS_DIR = "records"  # .../topics/T/partitions/NNNNNNNNNN/records/: one partition's batch objects

# the probes' Search polls, all outstanding probes together: every 20 ms (bench freshness's pace for its one
# probe at a time) made 50 Search/s of its own once probes waited, on the event loop the worker shares,
# which pushed a lagging worker further behind; a probe's time is then late by up to this much
PROBE_POLL_S = 0.1


@dataclass(frozen=True)
class Probe:
    """One freshness probe: sent ``sent_s`` seconds after T0; ``latency_s`` from send to visible in Search
    (None: missed)."""

    sent_s: float
    latency_s: float | None


@dataclass(frozen=True)
class Sample:
    """What the service looked like ``t_s`` seconds after T0 (negative: before it): the broker's batch objects
    over all topics and in its fullest partition, the bytes under DATA_DIR/broker, CPU seconds (cumulative,
    user + system; broker: Tansu, s3rver and their helpers; service: `cartwise serve` and its other children, such
    as an HNSW build), resident memory in bytes (``rss_bytes``: the `cartwise serve` process;
    ``broker_rss_bytes``: the broker's processes) and behavior events sent since T0 (cumulative)."""

    t_s: float
    objects: int
    objects_per_partition_max: int
    disk_bytes: int
    service_cpu_s: float
    broker_cpu_s: float
    rss_bytes: int
    broker_rss_bytes: int
    events_sent: int


class BrokerDisk:
    """Batch objects and bytes under the broker's store directory ``root`` (DATA_DIR/broker).

    Every :meth:`measure` walks the tree again, but stats only the files of a records folder it has not seen
    before: s3rver writes an object's files once (a temporary file renamed into place) and never changes them,
    so a partition of 100,000 objects costs a directory listing, not 300,000 stats. Bytes are the space
    allocated on disk (st_blocks, what ``du`` counts), s3rver's metadata and checksum files included."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known: dict[str, dict[str, int]] = {}  # records folder -> file name -> bytes

    def measure(self) -> tuple[int, int, int]:
        """(batch objects over all partitions, the most in one partition, bytes); zeros before the store
        has written anything."""
        objects, fullest, total, seen = 0, 0, 0, set()
        stack = [str(self.root)]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            stack += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
            files = [e for e in entries if e.is_file(follow_symlinks=False)]
            if os.path.basename(folder) != RECORDS_DIR:
                total += sum(_allocated(e) for e in files)
                continue
            seen.add(folder)
            known = self._known.setdefault(folder, {})
            names = {e.name: e for e in files}
            for gone in known.keys() - names.keys():
                del known[gone]
            for name in names.keys() - known.keys():
                known[name] = _allocated(names[name])
            count = sum(1 for name in names if name.endswith(OBJECT_SUFFIX))
            objects, fullest, total = objects + count, max(fullest, count), total + sum(known.values())
        for folder in self._known.keys() - seen:
            del self._known[folder]
        return objects, fullest, total


def _allocated(entry: os.DirEntry) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_blocks * 512
    except FileNotFoundError:  # renamed or removed since the listing
        return 0


class Sampler:
    """Takes :class:`Sample` s of the `cartwise serve` process ``pid`` and its children, its broker's store
    folder ``broker_dir``, and the behavior events counted in ``events_sent`` (a shared counter, or None).
    A child is the broker's when its command line names ``broker_dir`` or ``broker_port`` (Tansu, s3rver and
    any helper of theirs); every other child counts as the service's."""

    def __init__(self, pid: int, broker_dir: Path, broker_port: int, events_sent=None) -> None:
        self._serve, self._disk, self._events = psutil.Process(pid), BrokerDisk(broker_dir), events_sent
        self._marks = (str(broker_dir), f":{broker_port}")
        self._last: dict[tuple[int, float], float] = {}  # (pid, create time) -> CPU s at the last sample
        self.service_cpu_s = self.broker_cpu_s = 0.0

    def sample(self, t0: float) -> Sample:
        """A sample now, timed against ``t0`` (time.monotonic() at T0). Blocking (a walk of the store)."""
        t_s = time.monotonic() - t0
        rss, broker_rss = 0, 0
        for proc in [self._serve, *self._children()]:
            try:
                broker = proc is not self._serve and any(m in " ".join(proc.cmdline()) for m in self._marks)
                key, cpu, resident = (proc.pid, proc.create_time()), cpu_seconds([proc]), proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            delta, self._last[key] = cpu - self._last.get(key, 0.0), cpu
            if broker:
                self.broker_cpu_s += delta
                broker_rss += resident
            else:
                self.service_cpu_s += delta
                rss += resident if proc is self._serve else 0
        objects, fullest, disk = self._disk.measure()
        return Sample(t_s, objects, fullest, disk, self.service_cpu_s, self.broker_cpu_s, rss, broker_rss,
                      self._events.value if self._events is not None else 0)

    def _children(self) -> list[psutil.Process]:
        try:
            return self._serve.children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def minute_of_sample(t_s: float) -> int:
    """The minute a sample taken ``t_s`` seconds after T0 closes: m for ``60(m-1) < t_s <= 60m`` (up to
    :data:`SAMPLE_SLACK_S` late still counts as on time); 0 for the samples before the load."""
    return max(0, math.ceil((t_s - SAMPLE_SLACK_S) / 60.0))


def minute_of_probe(sent_s: float) -> int:
    """The minute a probe sent ``sent_s`` seconds after T0 belongs to (1 for [0, 60 s))."""
    return int(sent_s // 60.0) + 1


def _freshness(probes: list[Probe]) -> dict:
    seen = [p.latency_s for p in probes if p.latency_s is not None]
    spread = percentiles_ms(seen) if seen else {"p50_ms": None, "p99_ms": None}
    return {"freshness_p50_ms": spread["p50_ms"], "freshness_p99_ms": spread["p99_ms"], "probes": len(probes),
            "missed": len(probes) - len(seen)}


def minute_row(minute: int, probes: list[Probe], samples: list[Sample]) -> dict:
    """Minute ``minute``'s figures: freshness p50/p99 (ms) of the probes sent in it that were seen (None: none
    was), how many were sent and missed; from its last sample the gauges (``objects``,
    ``objects_per_partition_max``, ``disk_bytes``; None when no sample closed it) and the peak ``rss_bytes`` /
    ``broker_rss_bytes`` of its samples; CPU cores (CPU seconds per wall second) of the service and the broker
    and behavior events per second, from the last sample of the minute before (or the baseline) to its last."""
    inside = [s for s in samples if minute_of_sample(s.t_s) == minute]
    before = [s for s in samples if minute_of_sample(s.t_s) < minute]
    end, start = (inside[-1] if inside else None), (before[-1] if before else None)
    row = {"minute": minute, **_freshness([p for p in probes if minute_of_probe(p.sent_s) == minute])}
    row |= {"objects": end.objects if end else None,
            "objects_per_partition_max": end.objects_per_partition_max if end else None,
            "disk_bytes": end.disk_bytes if end else None,
            "rss_bytes": max(s.rss_bytes for s in inside) if inside else None,
            "broker_rss_bytes": max(s.broker_rss_bytes for s in inside) if inside else None}
    span = end.t_s - start.t_s if end and start else 0.0
    for key, field in (("service_cpu_cores", "service_cpu_s"), ("broker_cpu_cores", "broker_cpu_s"),
                       ("events_per_s", "events_sent")):
        row[key] = (getattr(end, field) - getattr(start, field)) / span if span > 0 else None
    return row


def minute_series(probes: list[Probe], samples: list[Sample], minutes: int) -> list[dict]:
    """:func:`minute_row` for minutes 1 to ``minutes``."""
    return [minute_row(m, probes, samples) for m in range(1, minutes + 1)]


def summarize(probes: list[Probe], samples: list[Sample], series: list[dict], minutes: int) -> dict:
    """The run's figures: freshness p99 (ms) of the probes of minutes 1-5 pooled (``_first``), of the last 5
    minutes pooled (``_last``; with fewer than 10 minutes the two overlap), the worst minute's p99
    (``_max_minute``), probes missed; the broker's batch objects and bytes at the last sample (``_end``) and
    their most at any sample (``_max``), and the most batch objects one partition held at any sample. None
    where nothing was measured."""
    def p99(chosen: list[Probe]) -> float | None:
        return _freshness(chosen)["freshness_p99_ms"]

    minute_p99 = [row["freshness_p99_ms"] for row in series if row["freshness_p99_ms"] is not None]
    last = samples[-1] if samples else None
    return {"freshness_p99_ms_first": p99([p for p in probes if minute_of_probe(p.sent_s) <= WINDOW_MINUTES]),
            "freshness_p99_ms_last": p99([p for p in probes
                                          if minute_of_probe(p.sent_s) > minutes - WINDOW_MINUTES]),
            "freshness_p99_ms_max_minute": max(minute_p99) if minute_p99 else None,
            "probes": len(probes), "missed": sum(1 for p in probes if p.latency_s is None),
            "objects_end": last.objects if last else None,
            "objects_max": max(s.objects for s in samples) if samples else None,
            "objects_per_partition_max": max(s.objects_per_partition_max for s in samples) if samples else None,
            "disk_bytes_end": last.disk_bytes if last else None,
            "disk_bytes_max": max(s.disk_bytes for s in samples) if samples else None}


def progress_line(row: dict, minutes: int) -> str:
    """One minute's figures as a progress line."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f} ms"

    def num(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
        return "-" if value is None else f"{value / scale:,.{digits}f}{unit}"

    return (f"minute {row['minute']}/{minutes}: freshness p50 {ms(row['freshness_p50_ms'])} p99 "
            f"{ms(row['freshness_p99_ms'])} ({row['missed']}/{row['probes']} missed), {num(row['objects'])} objects "
            f"({num(row['objects_per_partition_max'])} in one partition), {num(row['disk_bytes'], ' MiB', 2**20, 1)}, "
            f"CPU service {num(row['service_cpu_cores'], '', 1, 2)} broker {num(row['broker_cpu_cores'], '', 1, 2)} "
            f"cores, RSS {num(row['rss_bytes'], ' MiB', 2**20)}, {num(row['events_per_s'])} events/s sent")


def repriced(record: Record, event_id: str, rng: random.Random) -> Record:
    """A new upsert of ``record``'s product (:func:`common.refreshed`) with its price moved by up to
    :data:`PRICE_CHANGE` either way (cents) and out of stock with probability :data:`OUT_OF_STOCK`."""
    price = record.event.price
    if price is not None:
        price = round(price * (1.0 + rng.uniform(-PRICE_CHANGE, PRICE_CHANGE)), 2)
    return refreshed(record, event_id, price=price, in_stock=rng.random() >= OUT_OF_STOCK)


def _produce_load(settings: Settings, rate: float, catalog_rate: float, conn, events_sent) -> None:
    """The load process (module doc): loads REES46, says ``ready`` on ``conn``, waits for the number of seconds
    to send for, sends (behavior events counted in ``events_sent``) until then or until anything arrives on
    ``conn``, and answers (behavior events sent, catalog upserts sent, seconds, sends that failed, the Expected
    of what it sent: failed sends included)."""
    records = list(rees46_records())
    behavior = [r for r in records if r.topic_field != "catalog"]
    products = list({r.key: r for r in records if r.topic_field == "catalog"}.values())  # each one's last upsert
    del records
    rng, expected = random.Random(0), Expected(settings.personalization.max_history)
    streams = [(rate, (refreshed(r, f"soak-{n}") for n, r in enumerate(itertools.cycle(behavior)))),
               (catalog_rate, (repriced(r, f"soak-catalog-{n}", rng) for n, r in enumerate(itertools.cycle(products))))]
    producer = KafkaProducer(**{**producer_config(settings), "linger_ms": LOAD_LINGER_MS,
                                "batch_size": LOAD_BATCH_BYTES})

    def sent(record: Record) -> None:
        expected.apply(record)
        if record.topic_field != "catalog":
            events_sent.value += 1

    failures: list[Exception] = []
    try:
        conn.send("ready")
        seconds = conn.recv()
        started = time.monotonic()
        counts = send_paced(producer, settings.topics, streams,
                            lambda: time.monotonic() - started >= seconds or conn.poll(), on_send=sent,
                            on_failure=failures.append)
        conn.send((counts[0], counts[1], time.monotonic() - started, len(failures), expected))
    finally:
        producer.close()


class _LoadProcess:
    """:func:`_produce_load` in a process of its own (spawned: this process runs grpc and kafka threads)."""

    def __init__(self, settings: Settings, rate: float, catalog_rate: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.events_sent = context.Value("q", 0, lock=False)
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_produce_load, args=(settings, rate, catalog_rate, child, self.events_sent),
                                     name="cartwise-soak-load", daemon=True)
        self._proc.start()

    async def ready(self, timeout_s: float = 120.0) -> None:
        """Wait until it has loaded its events. Raises RuntimeError when it died, TimeoutError."""
        await asyncio.to_thread(self._receive, timeout_s)

    def go(self, seconds: float) -> None:
        """Start sending, for ``seconds``."""
        self._conn.send(seconds)

    async def result(self, timeout_s: float) -> tuple[int, int, float, int, Expected]:
        """(behavior events sent, catalog upserts sent, seconds, sends that failed, Expected of what it sent),
        once it is done."""
        return await asyncio.to_thread(self._receive, timeout_s)

    def _receive(self, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while not self._conn.poll(0.5):
            if not self._proc.is_alive():
                raise RuntimeError(f"the load process exited with status {self._proc.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from the load process in {timeout_s} s")
        return self._conn.recv()

    def close(self) -> None:
        """Stop it, if it still runs."""
        if self._proc.is_alive():
            try:
                self._conn.send("stop")
            except OSError:
                pass
            self._proc.join(10.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


async def _probes(settings: Settings, product_ids: list[str], t0: float, seconds: float, expected: Expected,
                  out: list[Probe]) -> None:
    """One freshness probe per second from ``t0`` for ``seconds``, concurrently (each polls up to
    PROBE_TIMEOUT_S, all of them together at most one Search per PROBE_POLL_S: freshness.PollBudget); each probe's
    event is folded into ``expected`` and its outcome appended to ``out``."""
    producer, budget = make_producer(settings), PollBudget(PROBE_POLL_S)

    async def one(client: AsyncClient, k: int) -> None:
        record, _, query, visible = probe(k, product_ids)
        expected.apply(record)
        sent_s = time.monotonic() - t0
        latency = await time_to_visible(client, producer, settings.topics, record, query, visible,
                                        tolerate_errors=True, budget=budget)
        out.append(Probe(sent_s, latency))

    try:
        async with AsyncClient(f"127.0.0.1:{settings.grpc_port}") as client:
            tasks = []
            for k in range(int(seconds)):
                await asyncio.sleep(max(0.0, t0 + k - time.monotonic()))
                tasks.append(asyncio.create_task(one(client, k)))
            await asyncio.gather(*tasks)
    finally:
        producer.close()


async def _sampling(sampler: Sampler, t0: float, seconds: float, out: list[Sample]) -> None:
    """A sample at ``t0`` and every SAMPLE_S after it, up to ``seconds``, appended to ``out``."""
    for k in range(int(seconds // SAMPLE_S) + 1):
        await asyncio.sleep(max(0.0, t0 + k * SAMPLE_S - time.monotonic()))
        out.append(await asyncio.to_thread(sampler.sample, t0))


async def _progress(console, t0: float, minutes: int, probes: list[Probe], samples: list[Sample]) -> None:
    """Each minute's line, once its last probes have had their time."""
    for minute in range(1, minutes + 1):
        await asyncio.sleep(max(0.0, t0 + 60.0 * minute + PROBE_TIMEOUT_S + 1.0 - time.monotonic()))
        say(console, progress_line(minute_row(minute, probes, samples), minutes))


async def _load(serve: ServeProcess, scratch: Path, product_ids: list[str], expected: Expected, rate: float,
                minutes: int, catalog_rate: float, qps: float, console) -> dict:
    """The load of the module doc on the running ``serve``, then a last sample and the worker group's lag on the
    source topics (records); returns the probes, samples, what the load process sent, the Search load
    generator's figures and that lag. Folds every event sent into ``expected``."""
    settings, seconds = serve.settings, 60.0 * minutes
    load = _LoadProcess(settings, rate, catalog_rate)
    searches: list[asyncio.subprocess.Process] = []
    tasks: list[asyncio.Task] = []
    try:
        await load.ready()
        queries = scratch / "queries.json"
        queries.write_text(json.dumps(rees46_queries()))
        # its clock starts after its own warm-up request, so it may run a moment past the end: it is awaited
        tasks.append(asyncio.create_task(offer(f"127.0.0.1:{settings.grpc_port}", queries, WARMUP_S + seconds, qps,
                                               started=searches.append)))
        await asyncio.sleep(WARMUP_S)
        t0, probes, samples = time.monotonic(), [], []
        sampler = Sampler(serve.proc.pid, settings.data_dir / "broker", settings.embedded_kafka_port, load.events_sent)
        load.go(seconds)
        say(console, f"load: {rate:g} behavior events/s, {catalog_rate:g} catalog upserts/s, {qps:g} Search/s, "
                     f"a freshness probe per second, for {minutes} min")
        tasks.append(asyncio.create_task(_probes(settings, product_ids, t0, seconds, expected, probes)))
        tasks.append(asyncio.create_task(_progress(console, t0, minutes, probes, samples)))
        await _sampling(sampler, t0, seconds, samples)
        events, upserts, sent_s, failed, sent = await load.result(timeout_s=120.0)
        expected.merge(sent)
        search_load, _, _ = await asyncio.gather(*tasks)
        samples.append(await asyncio.to_thread(sampler.sample, t0))  # after the load: what the kill finds
        lag = await asyncio.to_thread(consumer_lag, settings, [settings.topics.catalog, *settings.topics.behavior])
    finally:
        load.close()
        for task in tasks:
            task.cancel()
        for proc in searches:
            if proc.returncode is None:
                proc.kill()
    return {"probes": probes, "samples": samples, "events": events, "upserts": upserts, "sent_s": sent_s,
            "send_failures": failed, "search": search_load, "lag_at_kill": sum(lag.values())}


async def run_soak_bench(settings: Settings, rate: float = 1000.0, minutes: int = 60, catalog_rate: float = 20.0,
                         qps: float = 20.0, retention_s: float | None = None, plot: Path | None = None,
                         console=None) -> dict:
    """The soak of the module doc: ``rate`` behavior events/s, ``catalog_rate`` catalog upserts/s and ``qps``
    Search/s for ``minutes`` on a scratch `cartwise serve` (CARTWISE_RETENTION_S ``retention_s``; None: this
    environment's setting), then the kill -9 and restart check. Returns the figures of issue #28 (latencies in
    ms, sizes in bytes, times in s, rates per s; ``series``: one :func:`minute_row` per minute); with ``plot``
    the series is drawn there (PNG). Progress lines (one per minute) go to ``console``.
    Raises TimeoutError when the service does not start, catch up or restart in time."""
    if retention_s is not None:
        settings = settings.model_copy(update={"retention_s": retention_s})
    scratch, settings = scratch_settings(settings, "cartwise-soak-")
    catalog = [r for r in rees46_records() if r.topic_field == "catalog"]
    expected = Expected.of(catalog, settings.personalization.max_history)
    serve = ServeProcess(settings, scratch / "serve.log")
    try:
        say(console, "starting the scratch service")
        await asyncio.to_thread(serve.start, START_TIMEOUT_S)
        say(console, f"loading the REES46 catalog: {len(catalog):,} products")
        await asyncio.to_thread(publish_all, settings, catalog)
        await asyncio.to_thread(wait_caught_up, serve)
        run = await _load(serve, scratch, sorted(expected.products), expected, rate, minutes, catalog_rate, qps,
                          console)
        say(console, "kill -9 of the service's process group, and a restart")
        await asyncio.to_thread(serve.kill)
        serving_s = await asyncio.to_thread(serve.start, RESTART_TIMEOUT_S)
        caught_up_s = serving_s + await asyncio.to_thread(wait_caught_up, serve)
        say(console, f"SERVING after {serving_s:.1f} s, lag 0 after {caught_up_s:.1f} s; comparing with a rebuild")
        check = await asyncio.to_thread(check_against, serve, expected)
    finally:
        await asyncio.to_thread(serve.kill)
        shutil.rmtree(scratch, ignore_errors=True)
    series = minute_series(run["probes"], run["samples"], minutes)
    if plot:
        plot_soak(series, GOAL_FRESHNESS_MS, f"Soak: {rate:,.0f} events/s, {catalog_rate:g} upserts/s, "
                                             f"{qps:g} Search/s, durable embedded broker", plot)
    search = run["search"]
    return {"rate": rate, "minutes": minutes, "catalog_rate": catalog_rate, "qps": qps,
            "retention_s": settings.retention_s,
            **summarize(run["probes"], run["samples"], series, minutes),
            "restart_serving_s": serving_s, "restart_caught_up_s": caught_up_s, **check,
            "lag_at_kill": run["lag_at_kill"], "send_failures": run["send_failures"],
            "events_sent": run["events"], "events_per_s": run["events"] / run["sent_s"],
            "catalog_upserts_sent": run["upserts"], "catalog_upserts_per_s": run["upserts"] / run["sent_s"],
            "searches_ok": search["status"].get("OK", 0), "searches_failed": search["errors"],
            "search_offered_qps": search["offered_qps"], "search_p99_ms": search["p99_ms"],
            "search_status": search["status"], "probe_poll_ms": PROBE_POLL_S * 1000,
            "load_linger_ms": LOAD_LINGER_MS, "series": series, "machine": machine_info(),
            "command": f"cartwise bench soak --rate {rate:g} --minutes {minutes} --catalog-rate {catalog_rate:g} "
                       f"--qps {qps:g}" + (f" --retention-s {retention_s:g}" if retention_s is not None else "")
                       + (f" --plot {plot}" if plot else "") + " --json"}
