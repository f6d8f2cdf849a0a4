"""``cartwise bench search``: gRPC Search latency at a fixed offered load vs the encode + ANN floor,
(``--sweep``) a latency-throughput sweep over offered loads and its knee, and (``--overload``) what Search
serves and refuses at twice the knee."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path

from cartwise.app.bench.common import (
    latency_histogram,
    loaded_service,
    summarize_ms,
)
from cartwise.app.bench.loadgen import REJECTED, offer, read_records
from cartwise.app.bench.plots import plot_latency_histogram, plot_sweep
from cartwise.datasets import Record, homedepot_records, rees46_records
from cartwise.events import BehaviorEvent
from cartwise.lexical import LexicalEncoder
from cartwise.machine import machine_info
from cartwise.ranking import RankingProfile
from cartwise.registry import ModelRegistry
from cartwise.retrieval import RankRequest, Retrieval, rank
from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from grpc_api.validation import WIRE_OF_RETRIEVAL
from trainer.data import split_of
from trainer.evaluation.homedepot import load_homedepot

SYNTHETIC_T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SYNTHETIC_USERS = 1000
EVENTS_PER_USER = 5


DEFAULT_REPEAT_RATE = 0.5
GOAL_P99_MS = 15.0  # issue #13 at 200 QPS, marked on the histogram
FLOOR_QUERIES = 1000  # the floor is sequential: the first 1,000 requests' queries keep it to seconds


def repeating_queries(pool: list[str], count: int, repeat_rate: float, rng: random.Random) -> list[str]:
    """``count`` query texts: each, with probability ``repeat_rate``, repeats an earlier one (drawn uniformly
    from the earlier requests, so a query is repeated in proportion to how often it was asked: Simon's
    rich-get-richer process, whose frequencies follow a Zipf-like law), else is the next query of ``pool``
    not asked yet (cycling through ``pool`` once it is used up). Raises ValueError for an empty pool."""
    if not pool:
        raise ValueError("no queries to draw from")
    asked: list[str] = []
    fresh = 0
    for _ in range(count):
        if asked and rng.random() < repeat_rate:
            asked.append(rng.choice(asked))
        else:
            asked.append(pool[fresh % len(pool)])
            fresh += 1
    return asked


def homedepot_workload(count: int = 500, seed: int = 7, repeat_rate: float = DEFAULT_REPEAT_RATE
                       ) -> tuple[list[Record], list[dict]]:
    """The Home Depot catalog (54,667 upserts) with synthetic histories, and ``count`` Search requests over it.

    REES46 users' products are not in this catalog, so :data:`SYNTHETIC_USERS` users each view, cart or
    buy :data:`EVENTS_PER_USER` products judged relevant (grade >= 2) to one Home Depot query of the train
    split. The requests' texts are judged Home Depot queries, validation split first, each new one asked
    once and then repeated at ``repeat_rate`` (:func:`repeating_queries`: no query log exists here, so the
    rate is an assumption of the benchmark); half of the requests are for one of those users."""
    data = load_homedepot()
    queries = sorted(data.qrels)
    train, val = [q for q in queries if split_of(q) == "train"], [q for q in queries if split_of(q) == "val"]
    rng = random.Random(seed)
    pool = rng.sample(val, len(val)) + rng.sample(train, len(train))
    behavior = []
    for k in range(SYNTHETIC_USERS):
        topic = rng.choice(train)
        liked = sorted(p for p, grade in data.qrels[topic].items() if grade >= 2.0) or sorted(data.qrels[topic])
        for n in range(EVENTS_PER_USER):
            kind = rng.choice(("view", "view", "cart", "purchase"))
            event = BehaviorEvent(event_id=f"hd-synthetic-{k}-{n}", event_type=kind, user_id=f"hd-user-{k}",
                                  product_id=rng.choice(liked), event_time=SYNTHETIC_T0 + timedelta(seconds=n))
            behavior.append(Record(f"{kind}s", event.user_id, event))
    requests = [{"query": text, "limit": 10, **({"user_id": f"hd-user-{rng.randrange(SYNTHETIC_USERS)}"} if i % 2 else {})}
                for i, text in enumerate(repeating_queries(pool, count, repeat_rate, rng))]
    return [*homedepot_records(), *behavior], requests


def rees46_queries(count: int = 500, seed: int = 7) -> list[dict]:
    """SearchRequest fields: leaf categories and brand + leaf phrases, half for users with a history."""
    records = list(rees46_records())
    phrases = sorted({" ".join(filter(None, [(r.event.brand or "").lower(), r.event.category_path[-1]]))
                      for r in records if r.topic_field == "catalog" and r.event.category_path})
    users = sorted({r.event.user_id for r in records if r.topic_field in ("carts", "purchases")})
    rng = random.Random(seed)
    return [{"query": rng.choice(phrases).replace("_", " "), "limit": 10,
             **({"user_id": rng.choice(users)} if i % 2 else {})} for i in range(count)]


def _workload(catalog: str, count: int, repeat_rate: float) -> tuple[list[Record] | None, list[dict]]:
    """The records to load (None: all of REES46) and ``count`` SearchRequest fields for ``catalog``."""
    if catalog == "homedepot":
        return homedepot_workload(count, repeat_rate=repeat_rate)
    return None, rees46_queries(count)


async def _floor(service, queries: list[dict], retrieval: Retrieval) -> dict:
    """Query encode (dense and BM25) + the served engine query of ``retrieval`` alone, sequentially, on
    the same model, index and queries: latency (ms) and this process's CPU per query (ms), in all and in
    the query encode alone (the rest is the engine query)."""
    model, histogram, settings = service.active.current, latency_histogram(), service.settings
    lexical = LexicalEncoder(settings.lexical)
    cpu, encode_cpu = time.process_time(), 0.0
    for fields in queries:
        started, encode_started = time.perf_counter(), time.process_time()
        request = RankRequest(model.query_tower.encode([fields["query"]])[0], lexical.query(fields["query"]), None, 0.0,
                              retrieval)
        encode_cpu += time.process_time() - encode_started
        rank(service.index, model.groups, request, RankingProfile.from_settings(settings.lexical), fields["limit"], hnsw_ef=settings.hnsw_ef)
        histogram.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
    per_query = 1000 / max(len(queries), 1)
    return {**summarize_ms(histogram, "floor_"), "floor_cpu_ms_per_request": (time.process_time() - cpu) * per_query,
            "floor_encode_cpu_ms_per_request": encode_cpu * per_query}


OVERLOAD_FACTOR = 2.0
MAX_KNEE_QPS = 500.0  # requests are drawn for a knee up to this; past it the load generator cycles them
SWEEP_STEPS = (50.0, 100.0, 150.0, 200.0, 300.0, 400.0)
SWEEP_P99_MS = 50.0  # a sweep step fails above this answered p99 ...
SWEEP_MAX_NOT_OK = 0.01  # ... or with more than this share of its requests not OK
DEFAULT_DEADLINE_MS = 250.0
# Enough to keep the encode thread and the event loop both busy on a small machine, and few enough that
# the capacity run measures service, not refusals.
CAPACITY_CLIENTS = 8


# What --merchandise adds to every request: a price sort, an in-stock boost and facet counts, so each one
# ranks the whole candidate set (cartwise/merchandising.py) and counts it
MERCHANDISE = {"sort": pb.SORT_PRICE_ASC, "in_stock_boost": 0.1, "facets": True}


@contextmanager
def _queries_file(retrieval: Retrieval, queries: list[dict], extra: dict | None = None):
    work = Path(tempfile.mkdtemp(prefix="cartwise-bench-queries-"))
    try:
        path = work / "queries.json"
        path.write_text(json.dumps([{**q, "retrieval": WIRE_OF_RETRIEVAL[retrieval], **(extra or {})}
                                    for q in queries]))
        yield path
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _offer(port: int, queries: Path, seconds: float, qps: float = 0.0, *options: str,
                 records: Path | None = None) -> dict:
    """Run the load-generator process (cartwise.app.bench.loadgen, its docstring has the figures) against
    127.0.0.1:``port`` and return what it prints, plus ``server_cpu_ms_per_request`` (and
    ``server_cpu_ms_per_answer``, per OK answer, for comparing with the floor): this process's CPU
    time (the embedded service) over the run, in ms per request sent. With ``records``, the load generator
    also writes one JSON line per request there."""
    cpu = time.process_time()
    load = await offer(f"127.0.0.1:{port}", queries, seconds, qps, *options, records=records)
    cpu = time.process_time() - cpu
    return load | {"server_cpu_ms_per_request": 1000 * cpu / max(load["requests"], 1),
                   "server_cpu_ms_per_answer": 1000 * cpu / max(load["status"].get("OK", 0), 1)}


async def run_search_bench(settings: Settings, qps: float, seconds: float, console,
                           retrieval: Retrieval = "hybrid", catalog: str = "rees46",
                           repeat_rate: float = DEFAULT_REPEAT_RATE, merchandise: bool = False,
                           plot: Path | None = None) -> dict:
    """Load ``catalog`` (REES46 replayed whole, or :func:`homedepot_workload` with ``repeat_rate``), offer
    ``qps`` Search requests with ``retrieval`` from a separate load-generator process for ``seconds``, then
    measure the floor in this process (every query encoded: the floor never uses the query cache). Returns
    the figures (latencies in ms; ``target_qps`` is ``qps``, ``offered_qps`` the rate requests really
    started at; CPU in ms per request of the server process, and of the floor; the query cache's size and
    hit rate over the load, ``settings.query_cache_size`` 0 for none). With ``merchandise`` every request
    also asks for :data:`MERCHANDISE` (the floor stays the plain engine query). With ``plot``, the latency
    histogram of the OK answers is written there (PNG)."""
    count = int(qps * seconds) + 1  # one request per slot: a recycled list would repeat queries by itself
    records, queries = _workload(catalog, count, repeat_rate)
    async with loaded_service(settings, console, records=records) as service:
        model, cache = service.active.current, service.query_cache
        products, hits, misses = service.index.count(model.products), cache.hits, cache.misses
        quantized_from = ModelRegistry(service.settings.models_dir).manifest(model.version).config.get("quantized_from")
        with _queries_file(retrieval, queries, MERCHANDISE if merchandise else None) as path:
            records_path = path.with_name("records.jsonl") if plot else None
            with console.status(f"offering {qps:.0f} Search/s for {seconds:.0f} s"):
                load = await _offer(service.port, path, seconds, qps, records=records_path)
            hits, misses = cache.hits - hits, cache.misses - misses
            floor = await _floor(service, json.loads(path.read_text())[:FLOOR_QUERIES], retrieval)
            if records_path:
                plot_latency_histogram(answered_latencies(records_path), floor["floor_p50_ms"],
                                       GOAL_P99_MS, f"gRPC Search, {catalog}, {load['offered_qps']:.0f}/s offered "
                                       f"({load['qps']:.0f}/s answered OK)", plot)
    return {**load, **floor, "overhead_ratio": load["p50_ms"] / floor["floor_p50_ms"],
            "cpu_ratio": load["server_cpu_ms_per_answer"] / floor["floor_cpu_ms_per_request"], "target_qps": qps,
            "retrieval": retrieval, "catalog": catalog, "products": products, "model_version": model.version,
            "quantized_from": quantized_from, "query_cache_size": settings.query_cache_size,
            "query_cache_hit_rate": hits / max(hits + misses, 1),
            "repeat_rate": repeat_rate if catalog == "homedepot" else None, "merchandise": merchandise,
            "machine": machine_info(),
            "command": f"CARTWISE_QUERY_CACHE_SIZE={settings.query_cache_size} cartwise bench search --catalog "
                       f"{catalog} --qps {qps:g} --seconds {seconds:g} --retrieval {retrieval}"
                       + (f" --repeat-rate {repeat_rate:g}" if catalog == "homedepot" else "")
                       + (" --merchandise" if merchandise else "") + (f" --plot {plot}" if plot else "") + " --json"}


def answered_latencies(records: Path) -> list[float]:
    """Latencies (ms) of the OK answers in a load generator's records file."""
    return [row["latency_ms"] for row in read_records(records) if row["error"] is None]


async def run_overload_bench(settings: Settings, seconds: float, console, retrieval: Retrieval = "hybrid",
                             deadline_ms: float = DEFAULT_DEADLINE_MS, catalog: str = "rees46",
                             knee_qps: float | None = None, repeat_rate: float = DEFAULT_REPEAT_RATE) -> dict:
    """Search at :data:`OVERLOAD_FACTOR` x the knee on the loaded ``catalog`` (as :func:`run_search_bench`),
    every request with a ``deadline_ms`` gRPC deadline, for ``seconds``.

    The knee is ``knee_qps`` when given (the ``knee_qps`` of a :func:`run_sweep_bench` on this machine), else
    a first phase of ``seconds`` measures the capacity: the rate of OK answers (per s) of a closed loop of
    :data:`CAPACITY_CLIENTS` clients, each sending its next request when the previous one is answered, from
    the load-generator process on the same machine; the server is never idle and never holds more than that
    many requests, so this is the most it completes, the load generator's own CPU included as in the
    overload phase (``capacity_p99_ms`` beside it). The two phases draw disjoint requests. Overload:
    the knee x :data:`OVERLOAD_FACTOR` offered open-loop; see :func:`overload_summary`. Returns the figures
    (latencies in ms, rates per s, CPU in ms per request; ``admission_limit`` and ``admission_baseline_ms``
    are the adaptive admission's limit and no-load latency when the load ended)."""
    deadline = ("--deadline-ms", f"{deadline_ms:g}")
    count = int(OVERLOAD_FACTOR * (knee_qps or MAX_KNEE_QPS) * seconds) + 1
    records, queries = _workload(catalog, 2 * count, repeat_rate)
    async with loaded_service(settings, console, records=records) as service:
        products, capacity = service.index.count(service.active.current.products), None
        if knee_qps is None:
            with _queries_file(retrieval, queries[count:]) as path, \
                    console.status(f"capacity: {CAPACITY_CLIENTS} closed-loop clients for {seconds:.0f} s"):
                capacity = await _offer(service.port, path, seconds, 0.0, "--clients", str(CAPACITY_CLIENTS),
                                        *deadline)
        target = OVERLOAD_FACTOR * (knee_qps if knee_qps is not None else capacity["qps"])
        with _queries_file(retrieval, queries[:count]) as path, \
                console.status(f"overload: offering {target:.0f} Search/s for {seconds:.0f} s"):
            load = await _offer(service.port, path, seconds, target, *deadline)
        admission = _admission_state(service)
    return {**overload_summary(capacity, load, target), "knee_qps": target / OVERLOAD_FACTOR,
            "knee_from": "given" if knee_qps is not None else "capacity", "deadline_ms": deadline_ms,
            **admission, "min_in_flight": settings.min_in_flight, "max_in_flight": settings.max_in_flight,
            "capacity_clients": CAPACITY_CLIENTS, "retrieval": retrieval, "catalog": catalog, "products": products,
            "machine": machine_info(),
            "command": f"cartwise bench search --overload --catalog {catalog} --seconds {seconds:g} --deadline-ms "
                       f"{deadline_ms:g} --retrieval {retrieval}" + (f" --knee-qps {knee_qps:g}" if knee_qps else "")
                       + " --json"}


def _admission_state(service) -> dict:
    """The service's adaptive admission now: its limit and no-load latency estimate (ms, None while it has
    none), to read a run's refusals by."""
    admission = service.servicer.admission
    baseline = admission.baseline_s
    return {"admission_limit": admission.limit, "admission_baseline_ms": baseline * 1000 if baseline else None}


def overload_summary(capacity: dict | None, load: dict, target_qps: float) -> dict:
    """The overload figures from the load generator's output for the capacity run (None when the knee was
    given) and the overload run (offered ``target_qps``/s): served (OK) rate and p50/p99, the share of
    requests refused with RESOURCE_EXHAUSTED and how fast refusals came back (p99), the share that hit the
    deadline, and the count of any other status. ``offered_qps`` is the rate the load generator really
    started requests at, which is below ``target_qps`` when it could not keep up. Latencies in ms (None
    when no such answer or no capacity run)."""
    counts, total = load["status"], max(load["requests"], 1)
    served, rejected = counts.get("OK", 0), counts.get("RESOURCE_EXHAUSTED", 0)
    known = ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")
    capacity = capacity or {}
    return {"capacity_qps": capacity.get("qps"), "capacity_p50_ms": capacity.get("p50_ms"),
            "capacity_p99_ms": capacity.get("p99_ms"), "capacity_status": capacity.get("status"),
            "target_qps": target_qps, "offered_qps": load["offered_qps"], "requests": load["requests"],
            "served_qps": load["qps"], "served_p50_ms": load["p50_ms"] if served else None,
            "served_p99_ms": load["p99_ms"] if served else None, "rejected_rate": rejected / total,
            "rejected_p50_ms": load["rejected_p50_ms"] if rejected else None,
            "rejected_p99_ms": load["rejected_p99_ms"] if rejected else None,
            "deadline_exceeded_rate": counts.get("DEADLINE_EXCEEDED", 0) / total,
            "other_errors": sum(n for code, n in counts.items() if code not in known), "status": counts,
            "start_late_p99_ms": load["start_late_p99_ms"],
            "capacity_server_cpu_ms_per_request": capacity.get("server_cpu_ms_per_request"),
            "server_cpu_ms_per_request": load["server_cpu_ms_per_request"],
            "loadgen_cpu_ms_per_request": load["loadgen_cpu_ms_per_request"]}


async def run_sweep_bench(settings: Settings, steps: Sequence[float], seconds: float, console,
                          retrieval: Retrieval = "hybrid", catalog: str = "rees46",
                          repeat_rate: float = DEFAULT_REPEAT_RATE, plot: Path | None = None) -> dict:
    """A latency-throughput sweep on one loaded ``catalog`` (as :func:`run_search_bench`): each of ``steps``
    (offered Search/s, ascending) offered open-loop for ``seconds``, each step with requests of its own (the
    workload's next ones), then the floor (:func:`_floor`) on the first requests. Returns ``steps`` (one
    :func:`sweep_step` each, with the admission's limit and no-load latency at the step's end) and the
    top-level figures of :func:`sweep_summary` with the floor's; with ``plot``,
    :func:`cartwise.app.bench.plots.plot_sweep` draws the steps there (PNG)."""
    counts = [int(qps * seconds) + 1 for qps in steps]
    records, queries = _workload(catalog, sum(counts), repeat_rate)
    async with loaded_service(settings, console, records=records) as service:
        model, results = service.active.current, []
        products = service.index.count(model.products)
        for qps, start, count in zip(steps, accumulate([0, *counts]), counts):
            with _queries_file(retrieval, queries[start:start + count]) as path, \
                    console.status(f"sweep: offering {qps:g} Search/s for {seconds:.0f} s"):
                results.append({**sweep_step(qps, await _offer(service.port, path, seconds, qps)),
                                **_admission_state(service)})
        floor = await _floor(service, queries[:FLOOR_QUERIES], retrieval)
    summary = sweep_summary(results, floor["floor_cpu_ms_per_request"])
    if plot:
        plot_sweep(results, summary["knee_qps"], SWEEP_P99_MS, f"gRPC Search sweep, {catalog} ({products:,} "
                   f"products), {retrieval}, {seconds:g} s per step", plot)
    return {**summary, **floor, "steps": results, "retrieval": retrieval, "catalog": catalog, "products": products,
            "model_version": model.version, "query_cache_size": settings.query_cache_size,
            "repeat_rate": repeat_rate if catalog == "homedepot" else None, "machine": machine_info(),
            "command": f"cartwise bench search --sweep --catalog {catalog} --steps {','.join(f'{q:g}' for q in steps)} "
                       f"--seconds {seconds:g} --retrieval {retrieval}"
                       + (f" --repeat-rate {repeat_rate:g}" if catalog == "homedepot" else "")
                       + (f" --plot {plot}" if plot else "") + " --json"}


def sweep_step(target_qps: float, load: dict) -> dict:
    """One sweep step from the load generator's output (and :func:`_offer`'s server CPU): rates per s,
    shares of the requests sent, latencies (ms) of the OK answers (None without any), CPU in ms. ``passed``:
    answered p99 <= :data:`SWEEP_P99_MS` and at most :data:`SWEEP_MAX_NOT_OK` of the requests not OK."""
    total, counts = max(load["requests"], 1), load["status"]
    answered = counts.get("OK", 0) > 0
    not_ok = load["errors"] / total
    return {"target_qps": target_qps, "offered_qps": load["offered_qps"], "served_qps": load["qps"],
            "requests": load["requests"], "refused_rate": counts.get(REJECTED, 0) / total, "not_ok_rate": not_ok,
            "p50_ms": load["p50_ms"] if answered else None, "p99_ms": load["p99_ms"] if answered else None,
            "server_cpu_ms_per_answer": load["server_cpu_ms_per_answer"],
            "loadgen_cpu_ms_per_request": load["loadgen_cpu_ms_per_request"], "status": counts,
            "passed": answered and load["p99_ms"] <= SWEEP_P99_MS and not_ok <= SWEEP_MAX_NOT_OK}


def sweep_summary(steps: list[dict], floor_cpu_ms_per_request: float) -> dict:
    """``knee_qps``: the target rate of the highest step before the first that did not pass (0 when the
    first did not; steps ascending); ``cpu_ratio``: the knee step's server CPU per answer over the floor's
    CPU per request (None without a knee)."""
    knee = None
    for step in steps:
        if not step["passed"]:
            break
        knee = step
    return {"knee_qps": knee["target_qps"] if knee else 0.0, "floor_cpu_ms_per_request": floor_cpu_ms_per_request,
            "cpu_ratio": knee["server_cpu_ms_per_answer"] / floor_cpu_ms_per_request if knee else None}
