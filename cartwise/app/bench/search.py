"""``cartwise bench search``: gRPC Search latency at a fixed offered load vs the encode + ANN floor, and
(``--overload``) what Search serves and refuses at twice the load the machine can serve."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cartwise.app.bench.common import (
    latency_histogram,
    loaded_service,
    summarize_ms,
)
from cartwise.app.bench.loadgen import offer, read_records
from cartwise.app.bench.plots import plot_latency_histogram
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


async def _floor(service, queries: list[dict], retrieval: Retrieval) -> dict:
    """Query encode (dense and BM25) + the served engine query of ``retrieval`` alone, sequentially, on
    the same model, index and queries: latency (ms) and this process's CPU per query (ms), in all and in
    the query encode alone (the rest is the engine query)."""
    model, histogram, settings = service.active.current, latency_histogram(), service.settings
    lexical = LexicalEncoder(settings.lexical)
    cpu, encode_cpu = time.process_time(), 0.0
    for fields in queries:
        started, encode_started = time.perf_counter(), time.process_time()
        request = RankRequest(model.encoder.encode([fields["query"]])[0], lexical.query(fields["query"]), None, 0.0,
                              retrieval)
        encode_cpu += time.process_time() - encode_started
        rank(service.index, model.groups, request, RankingProfile.from_settings(settings.lexical), fields["limit"], hnsw_ef=settings.hnsw_ef)
        histogram.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
    per_query = 1000 / max(len(queries), 1)
    return {**summarize_ms(histogram, "floor_"), "floor_cpu_ms_per_request": (time.process_time() - cpu) * per_query,
            "floor_encode_cpu_ms_per_request": encode_cpu * per_query}


OVERLOAD_FACTOR = 2.0
DEFAULT_DEADLINE_MS = 250.0
# Enough to keep the encode thread and the event loop both busy on a small machine, and well under the
# default max_in_flight, so the capacity run measures service, not refusals.
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
    records, queries = (homedepot_workload(count, repeat_rate=repeat_rate) if catalog == "homedepot"
                        else (None, rees46_queries(count)))
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
                             deadline_ms: float = DEFAULT_DEADLINE_MS) -> dict:
    """Search at twice the load this machine can serve, in two phases of ``seconds`` each on the loaded
    REES46 catalog, every request with a ``deadline_ms`` gRPC deadline.

    Capacity: the rate of OK answers (per s) of a closed loop of :data:`CAPACITY_CLIENTS` clients, each
    sending its next request when the previous one is answered, from the load-generator process on the same
    machine. The server is never idle and never holds more than that many requests, so this is the most it
    completes, with the load generator's own CPU cost included as in the overload phase; its p99 is
    reported next to it (``capacity_p99_ms``, requests over the deadline are not counted as served).
    Overload: :data:`OVERLOAD_FACTOR` x capacity offered open-loop; see :func:`overload_summary`.
    Returns the figures (latencies in ms, rates per s, CPU in ms per request)."""
    deadline = ("--deadline-ms", f"{deadline_ms:g}")
    async with loaded_service(settings, console) as service:
        products, max_in_flight = service.index.count(service.active.current.products), service.settings.max_in_flight
        with _queries_file(retrieval, rees46_queries()) as path:
            with console.status(f"capacity: {CAPACITY_CLIENTS} closed-loop clients for {seconds:.0f} s"):
                capacity = await _offer(service.port, path, seconds, 0.0, "--clients", str(CAPACITY_CLIENTS),
                                        *deadline)
            target = OVERLOAD_FACTOR * capacity["qps"]
            with console.status(f"overload: offering {target:.0f} Search/s for {seconds:.0f} s"):
                load = await _offer(service.port, path, seconds, target, *deadline)
    return {**overload_summary(capacity, load, target), "deadline_ms": deadline_ms,
            "max_in_flight": max_in_flight, "capacity_clients": CAPACITY_CLIENTS, "retrieval": retrieval,
            "products": products, "machine": machine_info(),
            "command": f"cartwise bench search --overload --seconds {seconds:g} --deadline-ms {deadline_ms:g} "
                       f"--retrieval {retrieval} --json"}


def overload_summary(capacity: dict, load: dict, target_qps: float) -> dict:
    """The overload figures from the load generator's output for the capacity run and the overload run
    (offered ``target_qps``/s): served (OK) rate and p50/p99, the share of requests refused with
    RESOURCE_EXHAUSTED and how fast refusals came back (p99), the share that hit the deadline, and the
    count of any other status. ``offered_qps`` is the rate the load generator really started requests at,
    which is below ``target_qps`` when it could not keep up. Latencies in ms (None when no such answer)."""
    counts, total = load["status"], max(load["requests"], 1)
    served, rejected = counts.get("OK", 0), counts.get("RESOURCE_EXHAUSTED", 0)
    known = ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")
    return {"capacity_qps": capacity["qps"], "capacity_p50_ms": capacity["p50_ms"],
            "capacity_p99_ms": capacity["p99_ms"], "capacity_status": capacity["status"],
            "target_qps": target_qps, "offered_qps": load["offered_qps"], "requests": load["requests"],
            "served_qps": load["qps"], "served_p50_ms": load["p50_ms"] if served else None,
            "served_p99_ms": load["p99_ms"] if served else None, "rejected_rate": rejected / total,
            "rejected_p50_ms": load["rejected_p50_ms"] if rejected else None,
            "rejected_p99_ms": load["rejected_p99_ms"] if rejected else None,
            "deadline_exceeded_rate": counts.get("DEADLINE_EXCEEDED", 0) / total,
            "other_errors": sum(n for code, n in counts.items() if code not in known), "status": counts,
            "start_late_p99_ms": load["start_late_p99_ms"],
            "capacity_server_cpu_ms_per_request": capacity["server_cpu_ms_per_request"],
            "server_cpu_ms_per_request": load["server_cpu_ms_per_request"],
            "loadgen_cpu_ms_per_request": load["loadgen_cpu_ms_per_request"]}
