"""Model swaps on loopback with the real broker, stream worker, Qdrant Edge, ONNX encoders and gRPC.

v2 is the pretrained encoder followed by a random rotation W, so every v2 vector must equal W times the
v1 vector of the same text: products_v2 and users_v2 can be checked exactly against products_v1 and
users_v1, and a response that mixed versions would show semantic scores that match neither."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import NamedTuple

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from portpicker import pick_unused_port

from cartwise.client import AsyncClient
from cartwise.app.service import Service
from cartwise.catalog import point_id
from cartwise.datasets import rees46_records
from cartwise.events import ProductUpsert, encode_event
from cartwise.kafka_io import make_producer
from cartwise.lifecycle import HELD, SWAP_ABANDONED, ModelUpdate, publish_update, request_swap
from cartwise.personalization import UserHistory, user_vector
from cartwise.registry import ModelRegistry
from streams.journal import read_control
from tests.conftest import rotated_registry
from tests.support import eventually, read_all, running_service, service_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RECORDS = 1500  # REES46 behavior events replayed (with their catalog events)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory, registry_dir):
    """A registry with v1 (pretrained, active) and v2 (v1 rotated by W, a candidate), and W."""
    return rotated_registry(tmp_path_factory, registry_dir, seed=1)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(tmp_path_factory, broker, rotated):
    async with running_service(tmp_path_factory.mktemp("swap"), rotated[0], broker,
                               records=rees46_records(limit=RECORDS), backfill_batch=64) as svc:
        yield svc


async def wait_for(check, what: str, timeout_s: float = 180.0):
    """:func:`tests.support.eventually` with room for a whole backfill."""
    return await eventually(check, timeout_s, what)


def vectors(index, collection: str, ids: list[str]) -> dict[str, np.ndarray]:
    return {h.id: h.vector for h in index.retrieve(collection, ids, with_vectors=True)}


class Load:
    """Closed-loop Search load from ``workers`` concurrent callers; every response and error is kept."""

    def __init__(self, port: int, queries: list[dict], workers: int = 4) -> None:
        self.port, self.queries, self.workers = port, queries, workers
        self.responses: list[tuple[float, dict, object]] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()

    async def _caller(self, client: AsyncClient, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            fields = self.queries[i % len(self.queries)]
            try:
                response = await client.search(**fields)
                self.responses.append((time.monotonic(), fields, response))
            except Exception as err:  # noqa: BLE001 - every failure is counted by the test
                self.errors.append(repr(err))
            i += self.workers

    async def __aenter__(self) -> "Load":
        self._client = AsyncClient(f"127.0.0.1:{self.port}")
        await self._client.__aenter__()
        self._tasks = [asyncio.create_task(self._caller(self._client, k)) for k in range(self.workers)]
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._client.__aexit__(None, None, None)


def load_queries(count: int = 60) -> list[dict]:
    records = list(rees46_records(limit=RECORDS))
    titles = [r.event.title for r in records if r.topic_field == "catalog"][:count]
    users = [r.event.user_id for r in records if r.topic_field in ("carts", "purchases")]
    return [{"query": t, "limit": 10, **({"user_id": users[i % len(users)]} if i % 2 else {})}
            for i, t in enumerate(titles)]


def check_consistent(service: Service, response, fields: dict) -> None:
    """The semantic scores of a response equal <q, p> with q and p both from its model version."""
    registry = ModelRegistry(service.settings.models_dir)
    from encoders.runtime import ServingModel

    model = ServingModel.load(registry, response.model_version)
    q = model.encoder.encode([fields["query"]])[0]
    stored = vectors(service.index, model.products, [point_id(h.product_id) for h in response.hits])
    for hit in response.hits:
        assert hit.semantic_score == pytest.approx(float(q @ stored[point_id(hit.product_id)]), abs=1e-3)


class Swapped(NamedTuple):
    """What the swap under load left: the load's responses and errors, when v2 answered first (monotonic s)."""

    load: Load
    switched: float


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def swapped(service) -> Swapped:
    """v1 -> v2 under closed-loop Search load, with a live catalog event produced during the backfill."""
    settings = service.settings
    producer = make_producer(settings)
    async with Load(service.port, load_queries()) as load:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(request_swap, settings, "v2", "test")
        await wait_for(lambda: read_control(settings)[0].journal.backfill is not None, "backfill started")
        live = ProductUpsert(event_id="swap-live", event_time=datetime.now(timezone.utc), product_id="swap-live",
                             title="Cordless hedge trimmer 20 V", brand="Greenline", category_path=["garden"])
        producer.send(settings.topics.catalog, key=b"swap-live", value=encode_event(live))
        producer.flush()
        await wait_for(lambda: service.active.current.version == "v2", "switch to v2")
        switched = time.monotonic()
        await asyncio.sleep(1.0)
    producer.close()
    return Swapped(load, switched)


async def test_swap_under_load(service, swapped, rotated):
    """No failed request, no response mixing versions; v2's products and users are W times v1's; a live
    catalog event produced during the backfill reaches both versions; answers after the switch are v2's."""
    _, rotation = rotated
    settings = service.settings
    load, switched = swapped
    assert load.errors == []
    assert len(load.responses) > 50
    versions = {(r.model_version, r.index_version) for _, _, r in load.responses}
    assert versions <= {("v1", "products_v1"), ("v2", "products_v2")}
    assert {r.model_version for t, _, r in load.responses if t > switched + 0.5} == {"v2"}
    for version in ("v1", "v2"):  # a sample of each version's answers, recomputed from that version
        sample = [(f, r) for _, f, r in load.responses if r.model_version == version][:5]
        assert sample, f"no {version} response during the test"
        for fields, response in sample:
            check_consistent(service, response, fields)

    index = service.index
    assert index.count("products_v2") == index.count("products_v1")
    assert index.count("users_v2") == index.count("users_v1") > 0
    products_v1 = {h.payload["product_id"]: h.vector for h in index.search(
        "products_v1", np.ones(384, np.float32) / 20, 10_000, with_vectors=True, exact=True)}
    products_v2 = {h.payload["product_id"]: h.vector for h in index.retrieve(
        "products_v2", [point_id(p) for p in products_v1], with_vectors=True)}
    assert set(products_v2) == set(products_v1)
    worst = max(float(np.abs(rotation @ v - products_v2[p]).max()) for p, v in products_v1.items())
    assert worst < 1e-3, f"products_v2 is not v2's embedding of the catalog (max diff {worst})"
    # Every user rebuilt from the durable history with v2's product vectors (here: v1's rotated by W).
    rotated_v1 = {p: rotation @ v for p, v in products_v1.items()}
    users_v2 = {h.payload["user_id"]: h.vector for h in index.search(
        "users_v2", np.ones(384, np.float32) / 20, 10_000, with_vectors=True, exact=True)}
    histories = service.worker.histories
    assert set(users_v2) == set(histories.keys())
    for user_id, vector in users_v2.items():
        expected = user_vector(UserHistory.from_json(histories[user_id]), rotated_v1, settings.personalization)
        assert np.abs(expected.vector - vector).max() < 1e-3, user_id
    assert index.retrieve("products_v1", [point_id("swap-live")]) and index.retrieve("products_v2", [point_id("swap-live")])

    registry = ModelRegistry(settings.models_dir)
    assert registry.active() == "v2" and registry.state("v1")[0] == "retired"
    assert read_control(settings)[0].journal.live == ["v2", "v1"]
    assert service.worker.swaps.stats["products"] >= index.count("products_v1") - 1


async def test_rollback_is_instant_and_fresh(service, swapped):
    """After the swap to v2: v1 stayed live, so rolling back switches without a backfill, and a
    product added while v2 served is in v1's answers."""
    settings = service.settings
    before = dict(service.worker.swaps.stats)
    producer = make_producer(settings)
    product = ProductUpsert(event_id="rb-1", event_time=datetime.now(timezone.utc), product_id="rb-1",
                            title="Espresso machine with milk frother", brand="Caffio", category_path=["kitchen"])
    producer.send(settings.topics.catalog, key=b"rb-1", value=encode_event(product))
    producer.flush()
    producer.close()
    await wait_for(lambda: bool(service.index.retrieve("products_v1", [point_id("rb-1")])), what="dual-write")
    target = ModelRegistry(settings.models_dir).rollback_target()
    assert target == "v1"
    await asyncio.to_thread(request_swap, settings, target, "test")
    await wait_for(lambda: service.active.current.version == "v1", timeout_s=30, what="rollback")
    assert service.worker.swaps.stats == before  # no backfill ran
    async with AsyncClient(f"127.0.0.1:{service.port}") as client:
        response = await client.search("espresso machine milk frother", limit=5)
    assert response.model_version == "v1" and "rb-1" in [h.product_id for h in response.hits]
    assert ModelRegistry(settings.models_dir).active() == "v1"


async def test_messages_other_than_requests_change_nothing(service):
    """A gate's ``held`` message and a request for a missing version leave the service as it was."""
    settings = service.settings
    before = (service.active.current.version, service.index.collections())
    await asyncio.to_thread(publish_update, settings, ModelUpdate(kind=HELD, version="v2", reason="test"))
    await asyncio.to_thread(request_swap, settings, "v9", "test")

    def abandoned() -> bool:  # the worker answers the request for v9 after the held message (one partition)
        updates = [ModelUpdate.decode(r.value) for r in read_all(settings, settings.topics.models_updates)]
        return any(u and u.kind == SWAP_ABANDONED and u.version == "v9" for u in updates)

    await wait_for(lambda: asyncio.to_thread(abandoned), "the request for v9 abandoned", timeout_s=60)
    assert (service.active.current.version, service.index.collections()) == before
    assert ModelRegistry(settings.models_dir).active() == before[0]


@pytest.mark.timeout(600)  # two consumer-group joins, one waiting out the killed member's session
async def test_crash_in_backfill_resumes_on_restart(service, broker, rotated, tmp_path):
    """A `cartwise serve` killed (SIGKILL) in the middle of a backfill leaves v1 active and the journal (on
    the swap control topic) where it stopped; the restarted service resumes from the journal's offsets and
    then switches."""
    data_dir = tmp_path / "crash"
    shutil.copytree(rotated[0], data_dir / "models")
    settings = service_settings(data_dir, broker, backfill_batch=8, consumer_session_timeout_s=10.0)
    env = {**os.environ, "CARTWISE_CONSUMER_SESSION_TIMEOUT_S": "10", "CARTWISE_DATA_DIR": str(data_dir), "CARTWISE_KAFKA_BOOTSTRAP": broker.bootstrap,
           "CARTWISE_KAFKA_IDEMPOTENCE": "false",
           "CARTWISE_GRPC_PORT": str(pick_unused_port()), "CARTWISE_APP_ID": settings.app_id, "CARTWISE_BACKFILL_BATCH": "8",
           "CARTWISE_TOPIC_MODELS_UPDATES": settings.topics.models_updates}
    with open(tmp_path / "serve.log", "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "cartwise.app.cli", "--log-level", "INFO", "serve"], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    try:
        await wait_for(lambda: read_control(settings)[0].journal.live == ["v1"], what="start")
        await asyncio.to_thread(request_swap, settings, "v2", "test")
        await wait_for(lambda: (b := read_control(settings)[0].journal.backfill) is not None and b.products > 0,
                       what="backfill under way")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    crashed = read_control(settings)[0].journal  # the journal in Kafka, where the killed worker left it
    catalog_events = sum(r.topic_field == "catalog" for r in rees46_records(limit=RECORDS))
    assert ModelRegistry(settings.models_dir).active() == "v1"  # nothing half-switched
    assert crashed.backfill.version == "v2" and crashed.backfill.phase == "products"
    assert 0 < crashed.backfill.products < catalog_events

    restarted = Service(settings.model_copy(update={"backfill_batch": 64}))
    await restarted.start()
    try:
        await wait_for(lambda: restarted.active.current.version == "v2", what="resumed swap")
        stats = restarted.worker.swaps.stats
        assert stats["products"] < catalog_events  # resumed where it stopped, not from the beginning
        # v2 was built from the sources of truth: every product of the catalog topic, every user of the Table
        products = {r.key for r in rees46_records(limit=RECORDS) if r.topic_field == "catalog"}
        assert restarted.index.count("products_v2") >= len(products)
        assert restarted.index.count("users_v2") == len(list(restarted.worker.histories.keys())) > 0
        assert read_control(settings)[0].journal.backfill is None
    finally:
        await restarted.stop()


async def test_separate_worker_and_api_coordinate_through_kafka_and_the_registry(service, broker, rotated, tmp_path):
    """A worker-role and an api-role service that share only the index (in production a Qdrant server),
    the registry and the broker: the api side follows the worker's swap from models.updates."""
    data_dir = tmp_path / "roles"
    shutil.copytree(rotated[0], data_dir / "models")
    settings = service_settings(data_dir, broker)
    worker = Service(settings, role="worker")
    await worker.start()
    api = Service(settings.model_copy(update={"playground_port": 0}), role="api", index=worker.index)
    try:
        await api.start()
        assert api.worker is None and worker.api is None
        await worker.wait_until_consumed(1)
        # the playground's user picker reads through the API's reader, as Search does (an api-role process
        # over a Qdrant server has no writable index)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{api.playground.port}") as http:
            async with http.get("/api/info") as info:
                assert info.status == 200 and isinstance((await info.json())["users"], list)
        await asyncio.to_thread(request_swap, settings, "v2", "test")
        await wait_for(lambda: api.active.current.version == "v2", what="api follows the swap")
        async with AsyncClient(f"127.0.0.1:{api.port}") as client:
            response = await client.search("smartphone", limit=3)
        assert response.model_version == "v2" and response.index_version == "products_v2" and response.hits
    finally:
        await api.stop()
        await worker.stop()
