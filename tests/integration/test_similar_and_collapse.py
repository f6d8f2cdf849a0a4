"""SimilarProducts, the cold-start answer (popular products), the response's strategy, and collapsing
identical-text products, through the real service over gRPC on loopback (embedded broker, worker, Qdrant
Edge, ONNX encoder)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc
import pytest
import pytest_asyncio

from cartwise.events import BehaviorEvent, ProductUpsert, encode_event
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc
from tests.support import eventually, running_service

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
# (user, kind, product, seconds after T0): popularity counts purchases (w 1.0) and carts (w 0.6), decayed
# with a 3-day half-life; the impact driver's purchase is 30 days older than the rest
BEHAVIOR = [(USER, "cart", "kettle", 60),
            *[(f"buyer-{k}", "purchase", "hammer", 60 + k) for k in range(3)],
            ("buyer-3", "cart", "hose", 70), ("buyer-4", "cart", "hose", 71),
            ("buyer-5", "purchase", "impact", 60 - 30 * 86400)]


def catalog_and_behavior() -> list:
    """CATALOG's upserts and BEHAVIOR's events as (topic field, key, value) messages."""
    messages = [("catalog", pid.encode(), encode_event(ProductUpsert(
        event_id=f"{pid}-up", event_time=T0 + timedelta(seconds=k), product_id=pid, title=title, brand=brand,
        category_path=path, price=20.0 + k))) for k, (pid, title, brand, path) in enumerate(CATALOG)]
    for user, kind, pid, seconds in BEHAVIOR:
        event = BehaviorEvent(event_id=f"{user}-{pid}", event_type=kind, user_id=user, product_id=pid,
                              event_time=T0 + timedelta(seconds=seconds))
        messages.append(("purchases" if kind == "purchase" else "carts", user.encode(), encode_event(event)))
    return messages


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub(tmp_path_factory, registry_dir):
    async with running_service(tmp_path_factory.mktemp("data"), registry_dir, messages=catalog_and_behavior(),
                               embedded_kafka_storage="memory") as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            await eventually(lambda: _settled(stub), what="the worker's 1 s timers applied what waited on products")
            yield stub


async def _settled(stub) -> bool:
    """Whether the worker's 1 s timers have applied behavior that arrived before its product (the user's
    vector, the counts' categories) once the product is indexed."""
    tools = pb.Filter(category_prefix=["tools"])
    return ((await stub.Recommend(pb.RecommendRequest(user_id=USER))).strategy == "personal"
            and len((await stub.Recommend(pb.RecommendRequest(user_id="nobody", filter=tools))).hits) == 2)


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


async def test_a_shopper_with_no_history_gets_the_popular_products(stub):
    response = await stub.Recommend(pb.RecommendRequest(user_id="nobody", limit=10))
    assert response.strategy == "popular" and response.user_interactions == 0
    # 3 purchases > 2 carts (1.2) > 1 cart (0.6) > 1 purchase decayed over 10 half-lives
    assert ids(response) == ["hammer", "hose", "kettle", "impact"]
    assert response.hits[0].score == pytest.approx(1.0)
    assert response.hits[1].score == pytest.approx(1.2 / 3, rel=1e-3)
    search = await stub.Search(pb.SearchRequest(user_id="nobody", limit=2))
    assert search.strategy == "popular" and ids(search) == ["hammer", "hose"]


async def test_the_popular_answer_is_per_category_and_filtered(stub):
    tools = await stub.Recommend(pb.RecommendRequest(user_id="nobody", filter=pb.Filter(category_prefix=["tools"])))
    assert ids(tools) == ["hammer", "impact"]
    # prices are 20 + the catalog position: the hammer costs 25, the hose 26, the kettle 27
    dear = await stub.Recommend(pb.RecommendRequest(user_id="nobody", filter=pb.Filter(price=pb.PriceRange(min=25.5))))
    assert ids(dear) == ["hose", "kettle"]

