"""End to end on loopback: real broker, stream worker, Qdrant Edge, ONNX encoder and gRPC server."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from datetime import datetime, timedelta, timezone

import grpc
import pytest
import pytest_asyncio
from portpicker import pick_unused_port

from cartwise.client import AsyncClient
from cartwise.app.operations import fetch_status, request_forget, status_dict
from cartwise.catalog import point_id
from cartwise.events import BehaviorEvent, ProductDelete, ProductUpsert, encode_event
from cartwise.kafka_io import log_consumer, make_producer, read_topic
from cartwise.personalization import UserHistory
from cartwise.v1 import search_pb2 as pb
from streams.app import HISTORY_TABLE
from tests.support import eventually, read_all, running_service
from trainer.incremental import read_event_log

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(tmp_path_factory, registry_dir):
    async with running_service(tmp_path_factory.mktemp("data"), registry_dir,
                               metrics_port=pick_unused_port()) as svc:
        yield svc


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(service):
    async with AsyncClient(f"127.0.0.1:{service.port}") as c:
        yield c


@pytest.fixture(scope="module")
def producer(service):
    p = make_producer(service.settings)
    yield p
    p.close()


def send(producer, service, topic_field: str, key: str, value: bytes) -> None:
    producer.send(getattr(service.settings.topics, topic_field), key=key.encode(), value=value)
    producer.flush()


def upsert(pid: str, title: str, brand: str, seconds: float = 0.0, **extra) -> bytes:
    return encode_event(ProductUpsert(event_id=f"{pid}-{seconds}", event_time=T0 + timedelta(seconds=seconds),
                                      product_id=pid, title=title, brand=brand, category_path=["sports", "shoes"],
                                      price=50.0, **extra))


def behavior(kind: str, user: str, pid: str, seconds: float) -> bytes:
    return encode_event(BehaviorEvent(event_id=f"{user}-{pid}-{kind}-{seconds}", event_type=kind, user_id=user,
                                      product_id=pid, event_time=T0 + timedelta(seconds=seconds)))


def ids(response) -> list[str]:
    return [hit.product_id for hit in response.hits]


async def test_health_and_reflection(service, client):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    status = await health_pb2_grpc.HealthStub(client.channel).Check(
        health_pb2.HealthCheckRequest(service="cartwise.v1.SearchService"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_catalog_event_makes_product_searchable(service, client, producer):
    send(producer, service, "catalog", "it-kettle", upsert("it-kettle", "Stainless steel electric kettle 1.7 l",
                                                           "Brevo"))

    async def found():
        response = await client.search("electric kettle", limit=5)
        return response if "it-kettle" in ids(response) else None

    response = await eventually(found)
    hit = response.hits[ids(response).index("it-kettle")]
    assert hit.title.startswith("Stainless steel") and hit.brand == "Brevo" and list(hit.category_path) == ["sports",
                                                                                                              "shoes"]
    assert response.model_version == "v1" and response.index_version == "products_v1"
    # hybrid by default: the fused score is made of the parts the hit reports
    w, kappa = response.lexical_weight, service.settings.lexical.scale
    assert response.retrieval == pb.RETRIEVAL_HYBRID and w == pytest.approx(service.settings.lexical.weight)
    assert hit.lexical_score > 0
    assert hit.score == pytest.approx((1 - w) * hit.semantic_score + w * kappa * hit.lexical_score, abs=1e-4)


async def test_a_deleted_product_stays_deleted_when_an_older_upsert_arrives_late(service, client, producer):
    send(producer, service, "catalog", "it-gone", upsert("it-gone", "Walnut cutting board, end grain", "Boardly"))

    async def search(pid: str, present: bool):
        response = await client.search("walnut cutting board", limit=10)
        return (pid in ids(response)) == present

    await eventually(lambda: search("it-gone", True))
    delete = ProductDelete(event_id="it-gone-del", event_time=T0 + timedelta(seconds=10), product_id="it-gone")
    send(producer, service, "catalog", "it-gone", encode_event(delete))
    await eventually(lambda: search("it-gone", False))
    send(producer, service, "catalog", "it-gone", upsert("it-gone", "Walnut cutting board, end grain", "Boardly",
                                                         seconds=5))
    send(producer, service, "catalog", "it-probe", upsert("it-probe", "Walnut cutting board, edge grain", "Boardly",
                                                          seconds=20))
    await eventually(lambda: search("it-probe", True))  # the late upsert was consumed before the probe
    assert await search("it-gone", False)


async def test_every_retrieval_serves_the_product_with_its_score_parts(service, client, producer):
    send(producer, service, "catalog", "it-lamp", upsert("it-lamp", "Brass desk lamp with linen shade", "Lumo"))

    async def found(**fields):
        response = await client.search("brass desk lamp", limit=3, **fields)
        return response if "it-lamp" in ids(response) else None

    dense = await eventually(lambda: found(retrieval=pb.RETRIEVAL_DENSE))
    hit = dense.hits[ids(dense).index("it-lamp")]
    assert dense.retrieval == pb.RETRIEVAL_DENSE and dense.lexical_weight == 0.0 and hit.lexical_score == 0.0
    assert hit.score == pytest.approx(hit.semantic_score, abs=1e-4)
    lexical = await eventually(lambda: found(retrieval=pb.RETRIEVAL_LEXICAL))
    hit = lexical.hits[ids(lexical).index("it-lamp")]
    assert lexical.retrieval == pb.RETRIEVAL_LEXICAL and hit.lexical_score > 0
    assert hit.score == pytest.approx(hit.lexical_score)
    only_lexical = await eventually(lambda: found(lexical_weight=1.0))
    assert only_lexical.lexical_weight == 1.0
    assert all(h.score == pytest.approx(service.settings.lexical.scale * h.lexical_score, abs=1e-4)
               for h in only_lexical.hits)


async def test_cart_event_changes_that_users_ranking(service, client, producer):
    send(producer, service, "catalog", "it-shoe-a", upsert("it-shoe-a", "Trail running shoe, waterproof", "Acme"))
    send(producer, service, "catalog", "it-shoe-b", upsert("it-shoe-b", "Trail running shoe, lightweight mesh",
                                                           "Zenith"))
    query = dict(query="trail running shoe", user_id="it-user-1", limit=2, personalization_weight=1.0)

    async def both_indexed():
        response = await client.search(**query)
        return response if set(ids(response)) == {"it-shoe-a", "it-shoe-b"} else None

    before = await eventually(both_indexed)
    assert before.personalization_weight == 0.0  # cold user: no history yet
    lower = before.hits[1].product_id
    send(producer, service, "carts", "it-user-1", behavior("cart", "it-user-1", lower, 10))

    async def personalized():
        response = await client.search(**query)
        return response if response.user_interactions == 1 else None

    after = await eventually(personalized)
    assert ids(after)[0] == lower
    assert after.personalization_weight == pytest.approx(1.0)
    assert after.hits[0].personal_score > after.hits[1].personal_score
    other = await client.search("trail running shoe", user_id="someone-else", limit=2)
    assert ids(other) == ids(before)  # only that user's ranking changed


async def test_each_answer_is_published_as_an_impression_the_trainer_joins_to_events(service, client, producer):
    for pid, title in (("it-imp-a", "Insulated lunch box, two compartments"), ("it-imp-b", "Insulated lunch bag")):
        send(producer, service, "catalog", pid, upsert(pid, title, "Acme"))

    async def both_indexed():
        response = await client.search("insulated lunch box", user_id="it-imp-u", limit=2)
        return response if set(ids(response)) == {"it-imp-a", "it-imp-b"} else None

    answer = await eventually(both_indexed)
    assert len(answer.request_id) == 32
    taken = answer.hits[1].product_id
    send(producer, service, "carts", "it-imp-u", encode_event(BehaviorEvent(
        event_id="it-imp-cart", event_type="cart", user_id="it-imp-u", product_id=taken, event_time=T0,
        request_id=answer.request_id)))

    async def joined():
        log = await asyncio.to_thread(read_event_log, service.settings, None)
        return log if answer.request_id in log.impressions else None

    shown = (await eventually(joined)).impressions[answer.request_id]
    assert shown.product_ids == ids(answer) and shown.user_id == "it-imp-u"
    assert shown.query == "insulated lunch box" and shown.strategy == "search"


async def test_malformed_event_goes_to_dead_letter_topic_and_worker_carries_on(service, client, producer):
    topics = service.settings.topics
    send(producer, service, "catalog", "broken", b"{not json")
    send(producer, service, "catalog", "it-no-title", b'{"event_id": "x1", "event_time": "2026-01-01T00:00:00Z",'
                                                      b' "op": "upsert", "product_id": "it-no-title"}')
    send(producer, service, "catalog", "it-lamp", upsert("it-lamp", "Brass desk lamp with dimmer", "Lumo"))

    async def lamp_found():
        return "it-lamp" in ids(await client.search("brass desk lamp", limit=3))

    await eventually(lamp_found)

    async def both_dead_lettered():  # faust's producer sends them asynchronously
        found = {r.key: r for r in await dead_letters(service, topics.catalog)}
        return found if {b"broken", b"it-no-title"} <= set(found) else None

    by_key = await eventually(both_dead_lettered)
    assert by_key[b"broken"].value == b"{not json"
    errors = {k: dict(r.headers)["error"].decode() for k, r in by_key.items()}
    assert "title" in errors[b"it-no-title"]
    assert dict(by_key[b"broken"].headers)["source_topic"] == topics.catalog.encode()


async def test_behavior_for_unknown_product_is_kept_until_the_product_arrives(service, client, producer):
    written = service.worker.event_ages.summary("behavior", "applied")["count"]
    send(producer, service, "purchases", "it-user-2", behavior("purchase", "it-user-2", "it-late", 5))
    # positive evidence that the worker has written the batch holding the purchase (users and vectors)
    await eventually(lambda: service.worker.event_ages.summary("behavior", "applied")["count"] > written)
    cold = await client.stub.Recommend(pb.RecommendRequest(user_id="it-user-2"))
    assert cold.strategy == "popular" and cold.user_interactions == 0  # no vector without the product
    send(producer, service, "catalog", "it-late", upsert("it-late", "Cast iron skillet 28 cm", "Ferro"))

    async def recommended():
        response = await client.stub.Recommend(pb.RecommendRequest(user_id="it-user-2", limit=3))
        return response if response.strategy == "personal" else None

    response = await eventually(recommended)
    assert ids(response)[0] == "it-late"
    excluded = await client.stub.Recommend(pb.RecommendRequest(user_id="it-user-2", limit=3, exclude_purchased=True))
    assert "it-late" not in ids(excluded)


@pytest.mark.parametrize("request_fields, field", [
    (dict(), "query"),
    (dict(query="drill", limit=0), "limit"),
    (dict(query="drill", limit=1001), "limit"),
    (dict(query="x" * 513), "query"),
    (dict(query="drill", filter=pb.Filter(price=pb.PriceRange(min=5, max=1))), "filter.price"),
    (dict(query="drill", filter=pb.Filter(stock=9)), "filter.stock"),
    (dict(query="drill", lexical_weight=1.5), "lexical_weight"),
    (dict(query="drill", retrieval=7), "retrieval"),
])
async def test_bad_request_is_invalid_argument_naming_the_field(service, client, request_fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.Search(pb.SearchRequest(**request_fields))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")


async def test_undecodable_request_bytes_are_invalid_argument_and_the_server_carries_on(service, client):
    call = client.channel.unary_unary("/cartwise.v1.SearchService/Search", request_serializer=lambda b: b,
                                      response_deserializer=pb.SearchResponse.FromString)
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\xc3\x28"):  # bad tag; truncated; bad UTF-8
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(garbage, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("request: not a valid message")
    assert (await client.search("kettle", limit=1)).model_version


async def dead_letters(service, topic: str) -> list:
    """Every record on ``topic``'s dead-letter topic so far."""
    return await asyncio.to_thread(read_all, service.settings, service.settings.topics.dead_letter(topic))


async def test_malformed_behavior_shapes_are_dead_lettered_with_reasons(service, client, producer):
    topics = service.settings.topics
    view = BehaviorEvent(event_id="it-dl-ok", event_type="view", user_id="it-dl", product_id="it-lamp", event_time=T0)
    future = view.model_copy(update={"event_id": "it-dl-future",
                                     "event_time": datetime.now(timezone.utc) + timedelta(days=2)})
    oversized = view.model_copy(update={"event_id": "it-dl-big", "query": "x" * 512})
    bad = {
        b"it-dl-1": (b"it-dl", encode_event(future), "event_time"),
        b"it-dl-2": (b"someone-else", encode_event(view.model_copy(update={"event_id": "it-dl-key"})), "key:"),
        b"it-dl-3": (b"\xff\xfeit-dl", encode_event(view.model_copy(update={"event_id": "it-dl-utf8"})), "not UTF-8"),
        b"it-dl-4": (b"it-dl", encode_event(oversized) + b" " * service.settings.max_event_bytes, "bytes, over"),
        b"it-dl-5": (b"it-dl", encode_event(view).replace(b'"schema_version":1', b'"schema_version":9'),
                     "schema_version"),
    }
    for marker, (key, value, _) in bad.items():
        producer.send(topics.views, key=key, value=value, headers=[("marker", marker)])
    send(producer, service, "views", "it-dl", encode_event(view))

    async def user_applied():
        return service.worker.histories.get("it-dl") is not None

    await eventually(user_applied)  # the worker carried on past every bad record

    async def all_dead_lettered():  # faust's producer sends them asynchronously
        found = {dict(r.headers).get("marker"): r for r in await dead_letters(service, topics.views)}
        return found if set(bad) <= set(found) else None

    by_marker = await eventually(all_dead_lettered)
    for marker, (key, value, reason) in bad.items():
        record = by_marker[marker]
        assert record.key == key and record.value == value  # kept as sent
        assert reason in dict(record.headers)["error"].decode(), marker
    assert [i.event_id for i in UserHistory.from_json(service.worker.histories["it-dl"]).interactions] == ["it-dl-ok"]


async def test_status_reports_the_running_service(service, client):
    async def caught_up():
        status = await fetch_status(f"127.0.0.1:{service.port}")
        return status if status.lag == 0 else None

    status = status_dict(await caught_up() or await eventually(caught_up))
    model = service.active.current
    assert status["active_version"] == model.version and status["role"] == "all" and status["runs_worker"]
    assert status["products"] == service.index.count(model.products) > 0
    assert status["users"] == service.index.count(model.users) > 0
    assert status["applied"] == service.worker.counts.applied > 0 and status["dead_lettered"] >= 2
    assert set(status["lag_by_topic"]) == {service.settings.topics.catalog, *service.settings.topics.user_keyed,
                                           service.settings.topics.models_updates}
    assert status["stream_time"] >= T0.timestamp() and not status["repair_running"]


async def remains_of(service, user: str) -> dict:
    """Everything kept about ``user``: the history Table entry, and the point in every write target."""
    points = {m.users: service.index.retrieve(m.users, [point_id(user)]) for m in service.worker.targets.models()}
    return {"history": service.worker.histories.get(user), **{k: v for k, v in points.items() if v}}


async def test_forget_erases_history_vector_and_purchases_everywhere(service, client, producer):
    send(producer, service, "catalog", "it-fg-p", upsert("it-fg-p", "Folding camping chair", "Campo"))
    send(producer, service, "purchases", "it-fg", behavior("purchase", "it-fg", "it-fg-p", 30))

    async def recommended():
        response = await client.stub.Recommend(pb.RecommendRequest(user_id="it-fg", limit=3))
        return response if response.strategy == "personal" else None

    assert ids(await eventually(recommended))[0] == "it-fg-p"
    forgotten_before = service.worker.behavior.forgotten
    await asyncio.to_thread(request_forget, service.settings, "it-fg")

    async def erased():
        return service.worker.behavior.forgotten > forgotten_before and await remains_of(service, "it-fg") == {"history": None}

    await eventually(erased)
    after = await client.stub.Recommend(pb.RecommendRequest(user_id="it-fg"))
    assert after.strategy == "popular" and after.user_interactions == 0

    async def tombstoned():  # the worker's producer sends the changelog record asynchronously
        consumer = log_consumer(service.settings)
        try:
            changelog, _ = await asyncio.to_thread(read_topic, consumer,
                                                   f"{service.settings.app_id}-{HISTORY_TABLE}-changelog")
        finally:
            consumer.close()
        return [r.value for r in changelog if r.key == b"it-fg"][-1] is None

    await eventually(tombstoned)  # a tombstone: compaction forgets too


async def test_users_inactive_beyond_the_ttl_expire_in_stream_time(service, client, producer):
    ttl = timedelta(seconds=service.settings.user_ttl_s)
    send(producer, service, "catalog", "it-ttl-p", upsert("it-ttl-p", "Insulated steel water bottle", "Aqua"))
    send(producer, service, "carts", "it-ttl-old", encode_event(BehaviorEvent(
        event_id="it-ttl-old-1", event_type="cart", user_id="it-ttl-old", product_id="it-ttl-p",
        event_time=T0 - ttl - timedelta(days=1))))

    async def kept():
        return len(await remains_of(service, "it-ttl-old")) == 1 + len(service.worker.targets.models())

    await eventually(kept)  # older than the TTL, but stream time has not moved past a sweep yet
    expired_before = service.worker.behavior.expired
    send(producer, service, "carts", "it-ttl-new", encode_event(BehaviorEvent(
        event_id="it-ttl-new-1", event_type="cart", user_id="it-ttl-new", product_id="it-ttl-p",
        event_time=T0 + timedelta(days=2))))  # moves stream time past the next sweep

    async def expired():
        return service.worker.behavior.expired > expired_before and await remains_of(service, "it-ttl-old") == {"history": None}

    await eventually(expired)
    assert service.worker.histories.get("it-ttl-new") is not None
    assert service.worker.histories.get("it-user-1") is not None  # active within the TTL: kept


def scrape(service) -> dict[str, float]:
    """The service's /metrics as {"name{labels}": value}, labels sorted by name."""
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=15) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    values = {}
    for m in re.finditer(r"^(cartwise_\w+)(?:\{(.*)\})? (\S+)$", text, re.MULTILINE):
        labels = ",".join(sorted(re.findall(r'\w+="[^"]*"', m.group(2) or "")))
        values[m.group(1) + (f"{{{labels}}}" if labels else "")] = float(m.group(3))
    return values


async def test_metrics_endpoint_shows_the_running_service(service, client, producer):
    assert service.metrics_port == service.settings.metrics_port
    send(producer, service, "catalog", "it-metrics-lamp", upsert("it-metrics-lamp", "Brass desk lamp", "Lumo"))

    async def found():
        return "it-metrics-lamp" in ids(await client.search("brass desk lamp", limit=5))

    await eventually(found)
    await client.search("brass desk lamp", limit=5)  # the same query again: a cache hit
    catalog = service.settings.topics.catalog
    values = await asyncio.to_thread(scrape, service)
    assert values['cartwise_request_seconds_count{method="Search",status="OK"}'] >= 2
    assert values['cartwise_request_seconds_bucket{le="+Inf",method="Search",status="OK"}'] >= 2
    assert values["cartwise_requests_in_flight"] == 0
    assert values["cartwise_query_encode_seconds_count"] >= 1 and values["cartwise_query_cache_hits_total"] >= 1
    assert values['cartwise_impressions_total{outcome="published"}'] >= 1
    assert values[f'cartwise_events_total{{outcome="applied",topic="{catalog}"}}'] >= 1
    assert values[f'cartwise_events_consumed_total{{topic="{catalog}"}}'] >= 1
    assert f'cartwise_consumer_lag{{topic="{catalog}"}}' in values
    assert values['cartwise_swap_phase{phase="idle"}'] == 1 and values["cartwise_backfill_progress"] == 0
    assert values[f'cartwise_model_info{{version="{service.active.current.version}"}}'] == 1
    assert values["cartwise_process_cpu_seconds_total"] > 0
