"""``cartwise bench search``: gRPC Search latency at a fixed offered load vs the encode + ANN floor."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time

from cartwise.app.bench.common import (
    latency_histogram,
    loaded_service,
    summarize_ms,
)
from cartwise.datasets import rees46_records
from cartwise.lexical import LexicalEncoder
from cartwise.machine import machine_info
from cartwise.retrieval import RankRequest, Retrieval, rank
from cartwise.settings import Settings
from grpc_api.validation import WIRE_OF_RETRIEVAL


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
    the same model, index and queries."""
    model, histogram, settings = service.active.current, latency_histogram(), service.settings
    lexical = LexicalEncoder(settings.lexical)
    for fields in queries:
        started = time.perf_counter()
        request = RankRequest(model.encoder.encode([fields["query"]])[0], lexical.query(fields["query"]), None, 0.0,
                              retrieval)
        rank(service.index, model.products, request, settings.lexical, fields["limit"], hnsw_ef=settings.hnsw_ef)
        histogram.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
    return summarize_ms(histogram, "floor_")


async def run_search_bench(settings: Settings, qps: float, seconds: float, console,
                           retrieval: Retrieval = "hybrid") -> dict:
    """Load the REES46 catalog, offer ``qps`` Search requests with ``retrieval`` from a separate
    load-generator process for ``seconds``, then measure the floor in this process. Returns the figures
    (latencies in ms)."""
    queries = [{**q, "retrieval": WIRE_OF_RETRIEVAL[retrieval]} for q in rees46_queries()]
    async with loaded_service(settings, console) as service:
        products = service.index.count(service.active.current.products)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(queries, fh)
        with console.status(f"offering {qps:.0f} Search/s for {seconds:.0f} s"):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cartwise.app.bench.loadgen", f"127.0.0.1:{service.port}", str(qps), str(seconds),
                fh.name, stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
        load = json.loads(out)
        floor = await _floor(service, queries, retrieval)
    return {**load, **floor, "overhead_ratio": load["p50_ms"] / floor["floor_p50_ms"], "offered_qps": qps,
            "retrieval": retrieval, "products": products, "machine": machine_info(),
            "command": f"cartwise bench search --qps {qps:g} --seconds {seconds:g} --retrieval {retrieval} --json"}
