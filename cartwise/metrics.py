"""Every Prometheus metric a Cartwise process exports (docs/architecture.md, "Metrics"); names start
``cartwise_``. One :class:`Metrics` per service owns its own registry, served on ``/metrics`` by
:func:`serve_metrics` when ``CARTWISE_METRICS_PORT`` is set.

Request latency and encode time are observed where they happen (the gRPC interceptor in
grpc_api/request_metrics.py, encoders/batching.py); everything the code counts already (the stream
worker's counters, the query cache's hits and misses, the swap journal, the consumer lag of
``cartwise status``) is read at scrape time by collectors, so the hot paths do not change. The core cannot
import the layers above it: collectors take callables returning the objects (None while a part is not
started) and read them by duck typing."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

NAMESPACE = "cartwise"
REQUEST_SECONDS = "cartwise_request_seconds"
REQUESTS_IN_FLIGHT = "cartwise_requests_in_flight"
REQUESTS_REJECTED = "cartwise_requests_rejected"
ADMISSION_LIMIT = "cartwise_admission_limit"
QUERY_ENCODE_SECONDS = "cartwise_query_encode_seconds"
QUERY_CACHE_HITS = "cartwise_query_cache_hits"
QUERY_CACHE_MISSES = "cartwise_query_cache_misses"
IMPRESSIONS = "cartwise_impressions"
EVENTS = "cartwise_events"
EVENTS_CONSUMED = "cartwise_events_consumed"
USERS_REMOVED = "cartwise_users_removed"
CONSUMER_LAG = "cartwise_consumer_lag"
BACKFILL_PROGRESS = "cartwise_backfill_progress"
BACKFILL_PRODUCTS = "cartwise_backfill_products"
SWAP_PHASE = "cartwise_swap_phase"
EVENT_AGE_SECONDS = "cartwise_event_age_seconds"
MODEL = "cartwise_model"

# Search/Recommend answer in milliseconds warm; a cold encode or an overloaded replica in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# seconds from an event's producer to a stage of the worker (streams/event_ages.py); the goal is 1 s
EVENT_AGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ENCODE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
EVENT_OUTCOMES = ("applied", "stale", "dead_lettered")
SWAP_PHASES = ("idle", "products", "users")
LAG_CACHE_S = 10.0  # a lag reading is a few broker round trips: at most one per this many seconds


class Metrics:
    """The metrics of one service, in ``registry`` (a fresh CollectorRegistry by default, so several
    services in one test process do not collide). ``request_seconds`` (labels method, status) and
    ``query_encode_seconds`` are observed by their owners, in seconds; the ``watch_*`` methods add
    collectors read at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.request_seconds = Histogram(
            REQUEST_SECONDS, "Search/Recommend latency in seconds, by method and gRPC status code",
            ["method", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.query_encode_seconds = Histogram(
            QUERY_ENCODE_SECONDS, "time to encode one batch of queries (seconds), the cache's misses only",
            buckets=ENCODE_BUCKETS, registry=self.registry)
        ProcessCollector(namespace=NAMESPACE, registry=self.registry)  # cartwise_process_cpu_seconds_total, ...

    def watch_servicer(self, servicer: Callable[[], object | None]) -> None:
        """Export ``servicer()``'s ``in_flight`` (requests worked on now), ``admission.limit`` (the adaptive
        admission limit now) and ``rejected`` (refused RESOURCE_EXHAUSTED since start) counts, read at scrape
        time (0 while it returns None)."""
        gauge = Gauge(REQUESTS_IN_FLIGHT, "Search/Recommend requests being worked on", registry=self.registry)
        gauge.set_function(lambda: getattr(servicer(), "in_flight", 0))
        limit = Gauge(ADMISSION_LIMIT, "Search/Recommend requests the adaptive admission limit lets in flight now "
                                       "(it follows their latency)", registry=self.registry)
        limit.set_function(lambda: getattr(getattr(servicer(), "admission", None), "limit", 0))

        def collect():
            current = servicer()
            if current is not None:
                yield CounterMetricFamily(REQUESTS_REJECTED, "requests refused RESOURCE_EXHAUSTED (beyond "
                                                             "the admission limit)", value=current.rejected)
        self.registry.register(_Collect(collect))

    def watch_impressions(self, impressions: Callable[[], object | None]) -> None:
        """Export the impressions ``published`` and ``dropped`` since start (grpc_api/impressions.py)."""
        def collect():
            current = impressions()
            if current is not None:
                family = CounterMetricFamily(IMPRESSIONS, "answers published on the impressions topic, or dropped "
                                                          "(buffer full, broker failed)", labels=["outcome"])
                family.add_metric(["published"], current.published)
                family.add_metric(["dropped"], current.dropped)
                yield family
        self.registry.register(_Collect(collect))

    def watch_query_cache(self, cache: Callable[[], object | None]) -> None:
        """Export the query-embedding cache's ``hits`` and ``misses`` (lookups since start)."""
        def collect():
            current = cache()
            if current is not None:
                yield CounterMetricFamily(QUERY_CACHE_HITS, "query-embedding cache hits", value=current.hits)
                yield CounterMetricFamily(QUERY_CACHE_MISSES, "query-embedding cache misses", value=current.misses)
        self.registry.register(_Collect(collect))

    def watch_worker(self, worker: Callable[[], object | None]) -> None:
        """Export the stream worker's counters: ``counts.by_topic`` ((topic, outcome) -> events since
        start) as cartwise_events_total{topic, outcome} and cartwise_events_consumed_total{topic};
        ``behavior.forgotten`` / ``behavior.expired`` as cartwise_users_removed_total{reason}; and its swap coordinator
        (``swaps``): the backfill's phase (idle, products, users), its ``backfill_progress`` (the fraction of
        the catalog re-embedded, 0..1) and the catalog events it has re-embedded."""
        def collect():
            current = worker()
            if current is None:
                return
            by_topic: Mapping[tuple[str, str], int] = dict(current.counts.by_topic)
            events = CounterMetricFamily(EVENTS, "events consumed by the stream worker, by topic and outcome",
                                         labels=["topic", "outcome"])
            consumed = CounterMetricFamily(EVENTS_CONSUMED, "events consumed by the stream worker, by topic",
                                           labels=["topic"])
            totals: dict[str, int] = {}
            for (topic, outcome), n in sorted(by_topic.items()):
                events.add_metric([topic, outcome], n)
                totals[topic] = totals.get(topic, 0) + n
            for topic, n in sorted(totals.items()):
                consumed.add_metric([topic], n)
            removed = CounterMetricFamily(USERS_REMOVED, "users removed: erasure requests and TTL expiry",
                                          labels=["reason"])
            removed.add_metric(["forgotten"], current.behavior.forgotten)
            removed.add_metric(["expired"], current.behavior.expired)
            backfill = current.swaps.running()
            phase = GaugeMetricFamily(SWAP_PHASE, "1 for the swap coordinator's phase (idle: no backfill)",
                                      labels=["phase"])
            for name in SWAP_PHASES:
                phase.add_metric([name], float((backfill.phase if backfill else "idle") == name))
            progress = GaugeMetricFamily(BACKFILL_PROGRESS, "fraction of the catalog the running backfill has "
                                                            "re-embedded (1 in its users phase, 0 when none runs)")
            progress.add_metric([], 0.0 if backfill is None else
                                1.0 if backfill.phase == "users" else current.swaps.backfill_progress)
            products = GaugeMetricFamily(BACKFILL_PRODUCTS, "catalog events the running backfill has re-embedded")
            products.add_metric([], backfill.products if backfill else 0)
            yield from (events, consumed, removed, phase, progress, products, _event_ages(current.event_ages))
        self.registry.register(_Collect(collect))

    def watch_lag(self, lag: Callable[[], Mapping[str, int]]) -> None:
        """Export ``lag()`` (topic -> records the worker's group has not consumed; blocking, it may raise)
        as cartwise_consumer_lag{topic}, read at most every LAG_CACHE_S seconds; nothing while it fails."""
        cached: dict = {"at": float("-inf"), "lag": None}
        lock = threading.Lock()

        def collect():
            with lock:
                if time.monotonic() - cached["at"] > LAG_CACHE_S:
                    cached["at"] = time.monotonic()
                    try:
                        cached["lag"] = dict(lag())
                    except Exception as err:  # noqa: BLE001 - a scrape must answer when the broker does not
                        log.warning("consumer lag unavailable for metrics: %s", err)
                        cached["lag"] = None
                current = cached["lag"]
            if current is not None:
                family = GaugeMetricFamily(CONSUMER_LAG, "records the worker's group has not consumed, by topic",
                                           labels=["topic"])
                for topic, n in sorted(current.items()):
                    family.add_metric([topic], n)
                yield family
        self.registry.register(_Collect(collect))

    def watch_model(self, version: Callable[[], str | None]) -> None:
        """Export the serving model version as cartwise_model_info{version} 1 (nothing while unknown)."""
        def collect():
            current = version()
            if current:
                info = InfoMetricFamily(MODEL, "the model version this process serves (the registry's active one)")
                info.add_metric([], {"version": current})
                yield info
        self.registry.register(_Collect(collect))


class _Collect(Collector):
    """A collector from a function yielding metric families."""

    def __init__(self, collect: Callable[[], Iterable]) -> None:
        self._collect = collect

    def collect(self):
        return self._collect()


def serve_metrics(metrics: Metrics, host: str, port: int):
    """Serve ``metrics`` on http://host:port/metrics from a daemon thread (port 0 picks a free one).
    Returns (server, thread): ``server.server_port`` is the bound port; stop it with ``server.shutdown()``
    then ``server.server_close()``. Raises OSError when the address cannot be bound."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server, thread


def _event_ages(ages) -> HistogramMetricFamily:
    """The worker's event ages (streams/event_ages.EventAges) as cartwise_event_age_seconds{agent, stage}."""
    family = HistogramMetricFamily(EVENT_AGE_SECONDS, "seconds from an event's Kafka timestamp to a stage of the "
                                   "stream worker: batched (its batch starts), applied (Search sees it)",
                                   labels=["agent", "stage"])
    for (agent, stage), counts, total, sum_ms in ages.cumulative([bound * 1000 for bound in EVENT_AGE_BUCKETS]):
        buckets = [(str(bound), n) for bound, n in zip(EVENT_AGE_BUCKETS, counts)] + [("+Inf", total)]
        family.add_metric([agent, stage], buckets, sum_value=sum_ms / 1000)
    return family
