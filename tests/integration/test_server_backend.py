"""The gRPC service over the async Qdrant server backend (AsyncQdrantServerIndex on AsyncQdrantClient's local
mode; no Qdrant server can be installed here), with the real ONNX encoder and gRPC over loopback: it must
answer every kind of request as the same service over Qdrant Edge does, name a missing collection, and
answer UNAVAILABLE when the Qdrant server does not (a real gRPC client to a port where none listens)."""

from __future__ import annotations

import warnings
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import grpc
import numpy as np
import pytest
import pytest_asyncio
from qdrant_client import AsyncQdrantClient
from portpicker import pick_unused_port

from cartwise.catalog import event_lexical_text, event_product_text, point_id, product_payload
from cartwise.events import ProductUpsert
from cartwise.groups import group_points
from cartwise.index import (
    GROUPS_SCHEMA,
    PRODUCTS_SCHEMA,
    USERS_SCHEMA,
    AsyncQdrantServerIndex,
    EdgeIndex,
    IndexPoint,
    InlineAsyncIndex,
)
from cartwise.index.server import upsert_call
from cartwise.lexical import LexicalEncoder
from cartwise.personalization import UserPoint, UserVector
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc
from encoders.batching import QueryBatcher
from encoders.runtime import ActiveModel, ServingModel
from grpc_api.admin import AdminServicer
from grpc_api.server import ApiServer
from grpc_api.servicer import SearchServicer

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CATALOG = [  # product_id, title, brand, category path, price, in stock
    ("kettle", "Stainless steel electric kettle 1.7 l", "Cosori", ["kitchen", "appliances"], 39.0, True),
    ("toaster", "Two slice toaster with bagel setting", "Breville", ["kitchen", "appliances"], 49.0, True),
    ("mug", "Ceramic coffee mug 350 ml", "Ikea", ["kitchen", "tableware"], 4.0, True),
    ("grinder", "Burr coffee grinder", "Baratza", ["kitchen", "appliances"], 149.0, False),
    ("drill", "Cordless drill driver 18 V with two batteries", "Makita", ["tools", "power tools"], 129.0, True),
    ("hammer", "Claw hammer with fiberglass handle", "Estwing", ["tools", "hand tools"], 25.0, True),
    ("saw", "Cordless circular saw 18 V", "Makita", ["tools", "power tools"], 159.0, True),
    ("phone", "Smartphone with 128 GB storage", "Acme", ["electronics", "phones"], 399.0, True),
    ("charger", "USB-C fast charger 65 W", "Anker", ["electronics", "accessories"], 35.0, True),
    ("headphones", "Wireless noise cancelling headphones", "Sony", ["electronics", "audio"], 299.0, True),
]
USER, PURCHASED = "u-1", ("drill",)


def products(model: ServingModel, settings: Settings) -> list[IndexPoint]:
    events = [ProductUpsert(event_id=f"e-{pid}", event_time=T0, product_id=pid, title=title, brand=brand,
                            category_path=path, price=price, in_stock=in_stock)
              for pid, title, brand, path, price, in_stock in CATALOG]
    dense = model.encoder.encode([event_product_text(e) for e in events])
    sparse = LexicalEncoder(settings.lexical).documents([event_lexical_text(e) for e in events])
    return [IndexPoint(point_id(e.product_id), v, product_payload(e), s) for e, v, s in zip(events, dense, sparse)]


def user(points: list[IndexPoint]) -> IndexPoint:
    """A user who bought the drill and viewed the saw: û the unit mean of their vectors."""
    by_id = {p.payload["product_id"]: p.vector for p in points}
    total = by_id["drill"] + by_id["saw"]
    state = UserVector((total / np.linalg.norm(total)).astype(np.float32), float(np.linalg.norm(total)),
                       T0.timestamp(), 2, 0)
    return IndexPoint(point_id(USER), state.vector, UserPoint(USER, state, PURCHASED).to_payload())


@pytest.fixture(scope="module")
def serving(registry_dir):
    registry = ModelRegistry(registry_dir)
    return ActiveModel(ServingModel.load(registry, registry.active()))


@asynccontextmanager
async def api(active: ActiveModel, reader):
    """The real SearchService over ``reader`` on a free loopback port; yields its stub (and closes ``reader``)."""
    settings = Settings()
    server = ApiServer(SearchServicer(settings, reader, active, QueryBatcher()),
                       AdminServicer(settings, reader, active, "api", None), "127.0.0.1", 0)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield pb_grpc.SearchServiceStub(channel)
    finally:
        await server.stop(0)
        await reader.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stubs(serving, tmp_path_factory):
    """(server stub, edge stub): the service over the async server backend and over Qdrant Edge, each
    holding the same products and user."""
    model = serving.current
    points = products(model, Settings())
    client = AsyncQdrantClient(":memory:")
    server_index = AsyncQdrantServerIndex(client)
    edge = EdgeIndex(tmp_path_factory.mktemp("qdrant"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # local mode warns that it is not for production
        for name, schema, loaded in ((model.products, PRODUCTS_SCHEMA, points),
                                     (model.groups, GROUPS_SCHEMA, group_points(points)),
                                     (model.users, USERS_SCHEMA, [user(points)])):
            await server_index.create_collection(name, model.encoder.dims, schema)
            await client.upsert(name, **upsert_call(loaded).kwargs)  # the reader only reads
            edge.create_collection(name, model.encoder.dims, schema)
            edge.upsert(name, loaded)
    async with api(serving, server_index) as server, api(serving, InlineAsyncIndex(edge)) as embedded:
        yield server, embedded
    edge.close()


REQUESTS = [
    ("Search", pb.SearchRequest(query="cordless power drill", limit=5)),
    ("Search", pb.SearchRequest(query="coffee", limit=4, retrieval=pb.RETRIEVAL_LEXICAL)),
    ("Search", pb.SearchRequest(query="kitchen appliance", limit=4, retrieval=pb.RETRIEVAL_DENSE,
                                filter=pb.Filter(price=pb.PriceRange(max=100.0)))),
    ("Search", pb.SearchRequest(query="tools", user_id=USER, limit=5, exclude_purchased=True)),
    ("Recommend", pb.RecommendRequest(user_id=USER, limit=3)),
    ("Search", pb.SearchRequest(query="kitchen", limit=3, offset=1, sort=pb.SORT_PRICE_DESC, in_stock_boost=0.2,
                                facets=True)),
]


@pytest.mark.parametrize("method,request_", REQUESTS, ids=[f"{m}-{k}" for k, (m, _) in enumerate(REQUESTS)])
async def test_the_async_server_backend_answers_as_qdrant_edge_does(stubs, method, request_):
    server, embedded = [await getattr(stub, method)(request_) for stub in stubs]
    assert [h.product_id for h in server.hits] == [h.product_id for h in embedded.hits] and server.hits
    for field in ("score", "semantic_score", "personal_score", "lexical_score"):
        np.testing.assert_allclose([getattr(h, field) for h in server.hits],
                                   [getattr(h, field) for h in embedded.hits], atol=1e-4, err_msg=field)
    for field in ("model_version", "index_version", "personalization_weight", "user_interactions", "retrieval",
                  "lexical_weight", "facets"):
        assert getattr(server, field) == getattr(embedded, field), field


async def test_a_personalized_search_reads_the_user_from_the_server(stubs, serving):
    server, _ = stubs
    response = await server.Search(pb.SearchRequest(query="tools", user_id=USER, limit=10, exclude_purchased=True))
    assert response.user_interactions == 2 and response.personalization_weight > 0
    assert "drill" not in {h.product_id for h in response.hits}
    assert response.hits[0].product_id == "saw"  # the user viewed it, and it is a tool
    found = await server.Recommend(pb.RecommendRequest(user_id=USER, limit=10))
    assert {h.product_id for h in found.hits} >= {"drill", "saw"}
    assert found.hits[0].personal_score == pytest.approx(found.hits[0].score, abs=1e-5)  # ranked by <û, p̂> alone


async def test_an_unknown_user_gets_the_popular_answer(stubs):
    server, _ = stubs
    response = await server.Recommend(pb.RecommendRequest(user_id="nobody"))
    assert response.strategy == "popular" and response.user_interactions == 0


async def test_a_missing_collection_answers_unavailable_naming_it(serving):
    """The served version's collections do not exist on the server (dropped, or never built): the user's
    is read first, the text groups' when the request names no user."""
    model = serving.current
    async with api(serving, AsyncQdrantServerIndex(AsyncQdrantClient(":memory:"))) as stub:
        for request, missing in ((pb.SearchRequest(query="kettle"), model.groups),
                                 (pb.SearchRequest(query="kettle", user_id=USER), model.users)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Search(request)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == f"collection {missing!r} missing"


async def test_a_qdrant_server_that_does_not_answer_is_unavailable(serving):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qdrant-client cannot check the server's version
        client = AsyncQdrantClient(url=f"http://127.0.0.1:{pick_unused_port()}", prefer_grpc=True, grpc_port=pick_unused_port())
    async with api(serving, AsyncQdrantServerIndex(client)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Search(pb.SearchRequest(query="kettle", user_id=USER))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details().startswith("index unavailable: Qdrant server unavailable")
