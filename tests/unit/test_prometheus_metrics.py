"""The Prometheus metrics (cartwise/metrics.py): the request interceptor over real gRPC on loopback (OK,
an aborted call, authentication before it), and every collector's exposition from plain stand-ins."""

from __future__ import annotations

import re
from collections import Counter
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import generate_latest
from pydantic import SecretStr

from cartwise.metrics import Metrics
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc
from grpc_api.request_metrics import RequestMetrics
from grpc_api.security import BearerTokenAuth
from streams.event_ages import EventAges
from streams.journal import Backfill


def sample(text: str, name: str, **labels) -> float | None:
    """The value of the exposition line ``name{labels}`` (labels in any order), or None."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")) == labels:
            return float(match.group(2))
    return None


class Servicer(pb_grpc.SearchServiceServicer):
    async def Search(self, request, context):
        if request.query == "refuse":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded")
        return pb.SearchResponse(model_version="v1")


async def test_the_interceptor_times_search_by_method_and_status_after_authentication():
    metrics = Metrics()
    server = grpc.aio.server(interceptors=[BearerTokenAuth([SecretStr("secret")]),
                                           RequestMetrics(metrics.request_seconds)])
    pb_grpc.add_SearchServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub, token = pb_grpc.SearchServiceStub(channel), (("authorization", "Bearer secret"),)
            for _ in range(2):
                assert (await stub.Search(pb.SearchRequest(query="shoes"), metadata=token)).model_version == "v1"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Search(pb.SearchRequest(query="refuse"), metadata=token)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.Search(pb.SearchRequest(query="shoes"))
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError):  # not implemented by this servicer
                await stub.Recommend(pb.RecommendRequest(user_id="u"), metadata=token)
    finally:
        await server.stop(None)
    text = generate_latest(metrics.registry).decode()
    assert sample(text, "cartwise_request_seconds_count", method="Search", status="OK") == 2
    assert sample(text, "cartwise_request_seconds_count", method="Search", status="RESOURCE_EXHAUSTED") == 1
    assert sample(text, "cartwise_request_seconds_count", method="Recommend", status="UNIMPLEMENTED") == 1
    assert sample(text, "cartwise_request_seconds_count", method="Search", status="UNAUTHENTICATED") is None
    assert sample(text, "cartwise_request_seconds_bucket", method="Search", status="OK", le="+Inf") == 2
    assert sample(text, "cartwise_request_seconds_sum", method="Search", status="OK") > 0


def test_the_collectors_export_what_the_parts_count():
    metrics = Metrics()
    swaps = SimpleNamespace(running=lambda: Backfill(version="v2", products=40), backfill_progress=0.25)
    counts = SimpleNamespace(by_topic=Counter({("catalog", "applied"): 5, ("catalog", "stale"): 1,
                                               ("views", "dead_lettered"): 2}))
    worker = SimpleNamespace(counts=counts, behavior=SimpleNamespace(forgotten=3, expired=4), swaps=swaps,
                             event_ages=EventAges())
    worker.event_ages.observe("behavior", "applied", [100.0, 100.0, 99.7], now_s=100.3)  # ages 0.3, 0.3, 0.6 s
    servicer = SimpleNamespace(in_flight=2, rejected=7, admission=SimpleNamespace(limit=12))
    cache = SimpleNamespace(hits=9, misses=1)
    lag_calls = []
    metrics.watch_worker(lambda: worker)
    metrics.watch_servicer(lambda: servicer)
    metrics.watch_query_cache(lambda: cache)
    metrics.watch_lag(lambda: lag_calls.append(1) or {"catalog": 12, "views": 0})
    metrics.watch_model(lambda: "v1")
    metrics.query_encode_seconds.observe(0.003)
    text = generate_latest(metrics.registry).decode()
    assert sample(text, "cartwise_events_total", topic="catalog", outcome="applied") == 5
    assert sample(text, "cartwise_events_total", topic="views", outcome="dead_lettered") == 2
    assert sample(text, "cartwise_events_consumed_total", topic="catalog") == 6
    assert sample(text, "cartwise_users_removed_total", reason="forgotten") == 3
    assert sample(text, "cartwise_requests_in_flight") == 2 and sample(text, "cartwise_requests_rejected_total") == 7
    assert sample(text, "cartwise_admission_limit") == 12
    assert sample(text, "cartwise_query_cache_hits_total") == 9 and sample(text, "cartwise_query_cache_misses_total") == 1
    assert sample(text, "cartwise_query_encode_seconds_count") == 1
    assert sample(text, "cartwise_consumer_lag", topic="catalog") == 12
    assert sample(text, "cartwise_swap_phase", phase="products") == 1 and sample(text, "cartwise_swap_phase", phase="idle") == 0
    assert sample(text, "cartwise_backfill_progress") == 0.25 and sample(text, "cartwise_backfill_products") == 40
    assert sample(text, "cartwise_model_info", version="v1") == 1
    assert sample(text, "cartwise_event_age_seconds_bucket", agent="behavior", stage="applied", le="0.25") == 0
    assert sample(text, "cartwise_event_age_seconds_bucket", agent="behavior", stage="applied", le="0.5") == 2
    assert sample(text, "cartwise_event_age_seconds_bucket", agent="behavior", stage="applied", le="0.75") == 3
    assert sample(text, "cartwise_event_age_seconds_count", agent="behavior", stage="applied") == 3
    assert sample(text, "cartwise_event_age_seconds_sum", agent="behavior", stage="applied") == pytest.approx(1.2, abs=0.01)
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert all(name.startswith("cartwise_") for name in names), sorted(names)
    generate_latest(metrics.registry)
    assert len(lag_calls) == 1, "the lag is read at most every LAG_CACHE_S"
    # parts not started yet, a failing lag: the scrape still answers
    idle = Metrics()
    idle.watch_worker(lambda: None)
    idle.watch_servicer(lambda: None)
    idle.watch_lag(lambda: (_ for _ in ()).throw(TimeoutError("no broker")))
    idle.watch_model(lambda: None)
    text = generate_latest(idle.registry).decode()
    assert sample(text, "cartwise_requests_in_flight") == 0 and "cartwise_consumer_lag" not in text
