"""SimilarProducts, the response's strategy, and collapsing identical-text products, through the real service
over gRPC on loopback (embedded broker, worker, Qdrant Edge, ONNX encoder)."""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest
import pytest_asyncio

from cartwise.app.bench.common import free_port
from cartwise.app.service import Service
from cartwise.events import BehaviorEvent, ProductUpsert, encode_event
from cartwise.kafka_io import make_producer
from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
COPIES = ("drill-a", "drill-b", "drill-c")  # identical text: title, brand and category
CATALOG = [
    *[(pid, "Cordless drill driver 18 V with two batteries", "Acme", ["tools", "power tools"]) for pid in COPIES],
    ("drill-bits", "Titanium drill bit set, 21 pieces", "Acme", ["tools", "accessories"]),
    ("impact", "Brushless impact driver 18 V", "Globex", ["tools", "power tools"]),
    ("hammer", "Claw hammer 16 oz fiberglass handle", "Initech", ["tools", "hand tools"]),
    ("hose", "Expandable garden hose 50 ft", "Hydra", ["garden", "watering"]),
    ("kettle", "Stainless steel electric kettle 1.7 l", "Brevo", ["kitchen", "appliances"]),
]
USER = "similar-user"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub(tmp_path_factory, registry_dir):
    data_dir = tmp_path_factory.mktemp("data")
    shutil.copytree(registry_dir, data_dir / "models")
    settings = Settings(data_dir=data_dir, embedded_kafka_port=free_port(), embedded_storage_port=free_port(),
                        embedded_kafka_storage="memory", grpc_port=0, app_id=f"test-{uuid.uuid4().hex[:8]}")
    service = Service(settings)
    await service.start()
    producer = make_producer(settings)
    for k, (pid, title, brand, path) in enumerate(CATALOG):
        event = ProductUpsert(event_id=f"{pid}-up", event_time=T0 + timedelta(seconds=k), product_id=pid,
                              title=title, brand=brand, category_path=path, price=20.0 + k)
        producer.send(settings.topics.catalog, key=pid.encode(), value=encode_event(event))
    cart = BehaviorEvent(event_id="similar-cart", event_type="cart", user_id=USER, product_id="kettle",
                         event_time=T0 + timedelta(seconds=60))
    producer.send(settings.topics.carts, key=USER.encode(), value=encode_event(cart))
    producer.flush()
    producer.close()
    await service.wait_until_consumed(len(CATALOG) + 1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield pb_grpc.SearchServiceStub(channel)
    await service.stop()


def ids(response: pb.SearchResponse) -> list[str]:
    return [hit.product_id for hit in response.hits]


async def test_a_page_shows_one_product_of_each_identical_text(stub):
    response = await stub.Search(pb.SearchRequest(query="cordless drill", limit=5))
    assert len(set(ids(response)) & set(COPIES)) == 1
    assert len(response.hits) == 5 and response.strategy == "search"


async def test_keep_duplicates_shows_every_copy(stub):
    response = await stub.Search(pb.SearchRequest(query="cordless drill", limit=5, keep_duplicates=True))
    assert set(COPIES) <= set(ids(response))


async def test_similar_products_leaves_out_the_product_and_its_copies(stub):
    response = await stub.SimilarProducts(pb.SimilarProductsRequest(product_id="drill-a", limit=4))
    assert response.strategy == "similar" and response.retrieval == pb.RETRIEVAL_DENSE
    assert not set(ids(response)) & set(COPIES)
    assert ids(response)[0] in {"impact", "drill-bits"}  # the closest other tools, by the encoder
    scores = [hit.semantic_score for hit in response.hits]
    assert scores == sorted(scores, reverse=True) and all(hit.personal_score == 0 for hit in response.hits)


async def test_similar_products_with_keep_duplicates_ranks_the_copies_first_but_never_itself(stub):
    response = await stub.SimilarProducts(pb.SimilarProductsRequest(product_id="drill-a", limit=4,
                                                                    keep_duplicates=True))
    assert ids(response)[:2] in (["drill-b", "drill-c"], ["drill-c", "drill-b"])
    assert "drill-a" not in ids(response)
    assert response.hits[0].semantic_score == pytest.approx(1.0, abs=1e-4)


async def test_similar_products_tilts_toward_the_user_and_filters(stub):
    plain = await stub.SimilarProducts(pb.SimilarProductsRequest(product_id="hose", limit=3))
    tilted = await stub.SimilarProducts(pb.SimilarProductsRequest(product_id="hose", limit=3, user_id=USER,
                                                                  personalization_weight=10))
    assert tilted.personalization_weight == pytest.approx(10) and tilted.user_interactions == 1
    assert ids(tilted)[0] == "kettle" and ids(plain)[0] != "kettle"
    filtered = await stub.SimilarProducts(pb.SimilarProductsRequest(
        product_id="hose", limit=5, filter=pb.Filter(category_prefix=["tools", "power tools"])))
    assert ids(filtered) and all(pid in {*COPIES, "impact"} for pid in ids(filtered))


async def test_similar_products_answers_not_found_and_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SimilarProducts(pb.SimilarProductsRequest(product_id="no-such-product"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "product_id" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SimilarProducts(pb.SimilarProductsRequest(product_id=""))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("product_id")


async def test_strategy_names_what_answered(stub):
    personal = await stub.Search(pb.SearchRequest(user_id=USER, limit=3))
    recommend = await stub.Recommend(pb.RecommendRequest(user_id=USER, limit=3))
    assert personal.strategy == recommend.strategy == "personal"
