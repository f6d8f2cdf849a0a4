"""``cartwise bench recovery``: replay REES46 into the embedded service (`cartwise serve` as a child
process, its durable broker included), SIGKILL its whole process group at random moments while the worker
is still consuming, start it again each time, and at the end compare what it kept with a rebuild from
the source events (issue #12).

The replay is cut at random points; after each part the service is killed at a random delay, while the
worker still works through the part (it lags the producer), so kills land mid-batch, between the history
Table write and the vector write, or between a write and the offset commit. At the end the service is
caught up (its consumer group's committed offsets reach the end of every source topic) and stopped
cleanly, and the bench reads the history changelog (Kafka, before the stop: the broker is the service's
child) and its index (Qdrant Edge, opened after the service let go of it).

Expected state: each user's history is the source's behavior events applied in order
(cartwise.personalization.UserHistory), the user vector a rebuild from it over the indexed product
vectors; each product the newest catalog upsert by event time (the later one on a tie)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cartwise.app.bench.common import copy_versions, free_port, served_version
from cartwise.app.broker import port_open
from cartwise.app.replay import replay
from cartwise.catalog import point_id, product_payload
from cartwise.datasets import Record, rees46_records
from cartwise.events import BehaviorEvent, ProductUpsert
from cartwise.index import EdgeIndex
from cartwise.kafka_io import consumer_lag, log_consumer, make_producer, read_topic
from cartwise.personalization import UserHistory, UserPoint, user_vector
from cartwise.registry import ModelRegistry, collection_names
from cartwise.settings import Settings

VECTOR_TOLERANCE = 1e-4  # an incremental sum and a rebuild differ by float32 rounding only
HISTORY_TABLE = "user_history"


class ServeProcess:
    """`cartwise serve` as a child in a process group of its own, configured by ``settings``."""

    def __init__(self, settings: Settings, log: Path, log_level: str = "warning") -> None:
        self.settings, self.log, self.log_level = settings, log, log_level
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> float:
        """Spawn it and wait until its gRPC health check says SERVING; returns the seconds that took.
        Raises TimeoutError (the service is killed)."""
        s = self.settings
        env = {**os.environ, "CARTWISE_DATA_DIR": str(s.data_dir), "CARTWISE_APP_ID": s.app_id,
               "CARTWISE_EMBEDDED_KAFKA_PORT": str(s.embedded_kafka_port),
               "CARTWISE_EMBEDDED_STORAGE_PORT": str(s.storage_port), "CARTWISE_GRPC_PORT": str(s.grpc_port)}
        env.pop("CARTWISE_KAFKA_BOOTSTRAP", None)
        started = time.perf_counter()
        command = [sys.executable, "-m", "cartwise.app.cli", "--log-level", self.log_level, "serve"]
        self.proc = subprocess.Popen(command, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        while not _serving(f"127.0.0.1:{s.grpc_port}"):
            status = self.proc.poll()
            if status is not None or time.perf_counter() - started > timeout_s:
                self.kill()
                what = f"exited with status {status}" if status is not None else f"did not come up in {timeout_s} s"
                tail = "".join(self.log.read_text(errors="replace").splitlines(keepends=True)[-60:])
                raise TimeoutError(f"cartwise serve {what} (log: {self.log}):\n{tail}")
            time.sleep(0.1)
        return time.perf_counter() - started

    def kill(self) -> None:
        """SIGKILL its whole process group (service, broker, store) and wait until their ports are free.
        Raises TimeoutError when a port stays held for 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        # the broker and its store die with the group, but a restart must not find their ports still held
        deadline = time.monotonic() + 10.0
        while any(map(port_open, (self.settings.embedded_kafka_port, self.settings.storage_port))):
            if time.monotonic() > deadline:
                raise TimeoutError("the killed service's broker still holds its port after 10 s")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, a clean stop; returns its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)


def _serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="cartwise.v1.SearchService"), timeout=1.0)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class Expected:
    """What the source events say the service must hold."""

    histories: dict[str, UserHistory]
    products: dict[str, ProductUpsert]

    @classmethod
    def of(cls, records: list[Record], max_history: int) -> "Expected":
        """Histories and newest products from ``records`` in order (module doc)."""
        histories: dict[str, UserHistory] = {}
        products: dict[str, ProductUpsert] = {}
        for record in records:
            event = record.event
            if isinstance(event, BehaviorEvent):
                histories.setdefault(event.user_id, UserHistory()).apply(event, max_history)
            elif event.product_id not in products or event.event_time >= products[event.product_id].event_time:
                products[event.product_id] = event
        return cls(histories, products)


def caught_up(settings: Settings) -> bool:
    """Whether the worker's consumer group has no lag on the source topics (cartwise.kafka_io.consumer_lag)."""
    return not any(consumer_lag(settings, [settings.topics.catalog, *settings.topics.behavior]).values())


def stored_histories(settings: Settings) -> dict[str, UserHistory]:
    """The newest value per user in the history Table's changelog topic."""
    consumer = log_consumer(settings)
    try:
        records, _ = read_topic(consumer, f"{settings.app_id}-{HISTORY_TABLE}-changelog")
    finally:
        consumer.close()
    latest = {}
    for record in records:
        latest[json.loads(record.key)] = json.loads(record.value) if record.value is not None else None
    return {user: UserHistory.from_json(value) for user, value in latest.items()}


def compare(settings: Settings, expected: Expected, histories: dict[str, UserHistory]) -> dict:
    """lost, double_applied, mismatched_users, mismatched_products of the stopped service's index and of
    ``histories`` (its history Table, read from the changelog while its broker ran) against ``expected``
    (module doc)."""
    version = ModelRegistry(settings.models_dir).active()
    products, users = collection_names(version)
    index = EdgeIndex(settings.index_dir)
    try:
        hits = index.retrieve(products, [point_id(p) for p in expected.products], with_vectors=True)
        stored_products = {h.payload["product_id"]: h for h in hits}
        extra_products = index.count(products) - len(stored_products)
        user_hits = index.retrieve(users, [point_id(u) for u in expected.histories], with_vectors=True)
        points = {p.user_id: p for p in (UserPoint.from_payload(h.payload, h.vector) for h in user_hits)}
    finally:
        index.close()
    vectors = {pid: hit.vector for pid, hit in stored_products.items()}
    params = settings.personalization
    lost = sum(1 for user, history in expected.histories.items() for i in history.interactions
               if histories.get(user) is None or histories[user].find(i.event_id) is None)
    lost += sum(1 for pid in expected.products if pid not in stored_products)
    double, mismatched_users = 0, 0
    for user, history in expected.histories.items():
        want = user_vector(history, vectors, params)
        point = points.get(user)
        if want is None:
            mismatched_users += point is not None
            continue
        double += max(0, point.state.n - want.n) if point else 0
        mismatched_users += point is None or point.history != history.digest() or point.state.n != want.n or \
            float(np.abs(point.state.vector - want.vector).max()) > VECTOR_TOLERANCE
    mismatched_products = extra_products + sum(
        1 for pid, event in expected.products.items()
        if pid in stored_products and _payload_differs(stored_products[pid].payload, product_payload(event)))
    return {"lost": lost, "double_applied": double, "mismatched_users": mismatched_users,
            "mismatched_products": mismatched_products + sum(1 for p in expected.products if p not in stored_products)}


def _payload_differs(stored: dict, wanted: dict) -> bool:
    return any(stored.get(k) != v for k, v in wanted.items())


def run_recovery_bench(settings: Settings, kills: int = 5, limit: int | None = None, seed: int = 0,
                       console=None) -> dict:
    """Replay REES46 (the first ``limit`` rows; None: all) into a scratch embedded service, SIGKILL it
    ``kills`` times at random moments and restart it, then compare (module doc). Returns the keys of
    issue #12: events, kills, lost, double_applied, mismatched_users, mismatched_products, restart_s_p50
    (seconds from spawn to SERVING after a kill), and catch_up_s (from the last restart to caught up)."""
    rng = random.Random(seed)
    records = list(rees46_records(limit=limit))
    scratch = Path(tempfile.mkdtemp(prefix="cartwise-recovery-"))
    version = served_version(settings.models_dir)
    copy_versions(settings.models_dir, [version] if version else [], scratch / "models")
    settings = settings.model_copy(update={
        "data_dir": scratch, "kafka_bootstrap": None, "embedded_kafka_storage": "disk",
        "embedded_kafka_port": free_port(), "embedded_storage_port": free_port(), "grpc_port": free_port()})
    serve = ServeProcess(settings, scratch / "serve.log")
    cuts = sorted(rng.sample(range(1, len(records)), kills)) + [len(records)]
    restarts, start = [], 0
    serve.start()
    try:
        for n, cut in enumerate(cuts):
            producer = make_producer(settings)
            replay(records[start:cut], producer, settings.topics)
            producer.close()
            start = cut
            if n < kills:
                time.sleep(rng.uniform(0.0, 1.5))
                serve.kill()
                _say(console, f"kill {n + 1}/{kills} after {cut} of {len(records)} events")
                restarts.append(serve.start())
        caught = time.perf_counter()
        while not caught_up(settings):
            time.sleep(0.5)
        catch_up_s = time.perf_counter() - caught
        histories = stored_histories(settings)  # the broker stops with the service
        serve.stop()
        result = compare(settings, Expected.of(records, settings.personalization.max_history), histories)
    finally:
        serve.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"events": len(records), "kills": kills, **result,
            "restart_s_p50": float(np.median(restarts)) if restarts else None, "catch_up_s": catch_up_s}


def _say(console, text: str) -> None:
    if console is not None:
        console.log(text)
