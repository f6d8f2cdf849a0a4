"""cartwise.client against the real service on loopback (embedded broker, stream worker, Qdrant Edge, ONNX
encoder, gRPC) behind a bearer token: typed results from both clients, errors passing through with their
status, the token from settings, deadlines."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timezone

import grpc
import pytest
import pytest_asyncio

from cartwise.client import AsyncClient, Client, Facets, Filter, Hit, PriceBand, Retrieval, SearchResult, Sort
from cartwise.events import BehaviorEvent, ProductUpsert, encode_event
from cartwise.settings import Settings
from tests.support import eventually, running_service

pytestmark = pytest.mark.integration
TOKEN = "tok-client-test-0123456789"
NOW = datetime.now(timezone.utc)
PRODUCTS = {"cl-drill": ("Cordless drill driver 20 V with two batteries", "Voltline", ["tools", "power"], 99.0),
            "cl-saw": ("Circular saw 7-1/4 in. corded", "Voltline", ["tools", "power"], 129.0),
            "cl-kettle": ("Stainless steel electric kettle 1.7 l", "Brevo", ["kitchen", "appliances"], 39.0)}
USER = "cl-user"


def _upsert(pid: str) -> bytes:
    title, brand, category, price = PRODUCTS[pid]
    return encode_event(ProductUpsert(event_id=f"{pid}-0", event_time=NOW, product_id=pid, title=title, brand=brand,
                                      category_path=category, price=price))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(tmp_path_factory, registry_dir):
    """The service with CARTWISE_API_TOKENS set, holding PRODUCTS and a user who carted the kettle."""
    cart = BehaviorEvent(event_id="cl-cart-1", event_time=NOW, event_type="cart", user_id=USER, product_id="cl-kettle")
    messages = [("catalog", pid.encode(), _upsert(pid)) for pid in PRODUCTS] + [("carts", USER.encode(),
                                                                                  encode_event(cart))]
    async with running_service(tmp_path_factory.mktemp("data"), registry_dir, messages=messages,
                               embedded_kafka_storage="memory", api_tokens=TOKEN) as svc:
        yield svc


@pytest.fixture(scope="module")
def target(service) -> str:
    return f"127.0.0.1:{service.port}"


@pytest.fixture(scope="module")
def with_token() -> Settings:
    return Settings(api_token=TOKEN)


@pytest_asyncio.fixture(loop_scope="session")
async def client(target, with_token):
    async with AsyncClient(target, with_token) as c:
        yield c


async def _until_user_known(client: AsyncClient) -> SearchResult:
    """Recommend for USER once the worker has written the user's vector (the popular products until then)."""

    async def personal():
        result = await client.recommend(USER, limit=3)
        return result if result.strategy == "personal" else None

    return await eventually(personal, what="the user's vector written")


async def test_async_search_returns_typed_hits(client):
    result = await client.search("cordless drill", limit=3, timeout_s=30)
    assert isinstance(result, SearchResult) and all(isinstance(hit, Hit) for hit in result.hits)
    assert result.hits[0] == Hit("cl-drill", PRODUCTS["cl-drill"][0], ("tools", "power"), "Voltline", 99.0, True,
                                 result.hits[0].score, result.hits[0].lexical_score, result.hits[0].semantic_score,
                                 0.0)
    assert result.retrieval is Retrieval.HYBRID and result.model_version == "v1" and result.strategy == "search"
    assert result.index_version == "products_v1" and result.hits[0].lexical_score > 0
    with pytest.raises(AttributeError):  # frozen
        result.hits[0].score = 1.0  # type: ignore[misc]


async def test_filter_and_retrieval_reach_the_service(client):
    kitchen = await client.search("electric", filter=Filter(category_prefix=("kitchen",)), timeout_s=30)
    assert [hit.product_id for hit in kitchen.hits] == ["cl-kettle"]
    cheap = await client.search("power tool", filter=Filter(price_max=100.0), retrieval=Retrieval.DENSE, timeout_s=30)
    assert cheap.retrieval is Retrieval.DENSE and {hit.product_id for hit in cheap.hits} == {"cl-drill", "cl-kettle"}


async def test_paging_sort_and_facets_reach_the_service(client):
    by_price = await client.search("power tool", sort=Sort.PRICE_DESC, limit=2, facets=True, timeout_s=30)
    assert [hit.price for hit in by_price.hits] == [129.0, 99.0]
    assert [hit.product_id for hit in (await client.search("power tool", sort=Sort.PRICE_DESC, offset=2,
                                                           timeout_s=30)).hits] == ["cl-kettle"]
    assert by_price.facets == Facets(categories=(("tools", 2), ("kitchen", 1)),
                                     brands=(("voltline", 2), ("brevo", 1)),
                                     price_bands=(PriceBand(25.0, 50.0, 1), PriceBand(50.0, 100.0, 1),
                                                  PriceBand(100.0, 250.0, 1)), candidates=3)
    plain = await client.search("power tool", in_stock_boost=0.5, timeout_s=30)
    assert plain.facets is None and all(hit.score > 0.5 for hit in plain.hits)  # every product is in stock


async def test_recommend_and_personal_scores(client):
    recommended = await _until_user_known(client)
    assert recommended.hits[0].product_id == "cl-kettle" and recommended.user_interactions == 1
    assert recommended.strategy == "personal"
    personal = await client.search("stainless", user_id=USER, timeout_s=30)
    assert personal.personalization_weight > 0 and personal.hits[0].personal_score > 0


async def test_similar_products_leave_the_product_out(client):
    similar = await client.similar_products("cl-drill", limit=2, timeout_s=30)
    assert [hit.product_id for hit in similar.hits] == ["cl-saw", "cl-kettle"] and similar.strategy == "similar"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.similar_products("cl-unknown", timeout_s=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_sync_client_has_the_same_methods(target, with_token, client):
    await _until_user_known(client)

    def calls() -> tuple[SearchResult, SearchResult, SearchResult]:
        with Client(target, with_token, timeout_s=30) as sync:
            return (sync.search("circular saw", limit=2), sync.recommend(USER, limit=1),
                    sync.similar_products("cl-saw", limit=1))

    searched, recommended, similar = await asyncio.to_thread(calls)
    assert searched.hits[0].product_id == "cl-saw" and recommended.hits[0].product_id == "cl-kettle"
    assert similar.hits[0].product_id == "cl-drill"
    again = await client.search("circular saw", limit=2, timeout_s=30)
    assert searched.request_id != again.request_id  # each answer is named on its own
    assert dataclasses.replace(searched, request_id="") == dataclasses.replace(again, request_id="")


async def test_errors_pass_through_with_their_status(client, target, with_token):
    with pytest.raises(grpc.aio.AioRpcError) as not_found:
        await client.similar_products("cl-nobody", timeout_s=30)
    assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await client.search("drill", limit=5000, timeout_s=30)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and invalid.value.details().startswith("limit")

    def sync_invalid() -> grpc.RpcError:
        with Client(target, with_token) as sync, pytest.raises(grpc.RpcError) as err:
            sync.search("drill", limit=0, timeout_s=30)
        return err.value

    assert (await asyncio.to_thread(sync_invalid)).code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_token_comes_from_settings(target):
    async with AsyncClient(target, Settings(api_tokens=f"{TOKEN},another-token-0123")) as first_of_the_list:
        assert (await first_of_the_list.search("drill", limit=1, timeout_s=30)).hits
    async with AsyncClient(target, Settings(api_token="tok-wrong-0123456789")) as wrong:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await wrong.search("drill", limit=1, timeout_s=30)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_deadlines_per_call_and_by_default(target, with_token):
    async with AsyncClient(target, with_token, timeout_s=1e-6) as impatient:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await impatient.search(f"drill {uuid.uuid4().hex}")  # the client's default deadline
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert (await impatient.search("drill", limit=1, timeout_s=30)).hits  # a call's own deadline wins
    async with AsyncClient(target, with_token) as patient:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await patient.search(f"drill {uuid.uuid4().hex}", timeout_s=1e-6)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
