"""Merchandising through the real service over gRPC on loopback (embedded broker, worker, Qdrant Edge, ONNX
encoder): offset paging with collapsing, price sorts, the in-stock boost and facet counts."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone

import grpc
import pytest
import pytest_asyncio
from click.testing import CliRunner

from cartwise.app.cli import main
from cartwise.events import ProductUpsert, encode_event
from cartwise.merchandising import PRICE_EDGES
from cartwise.ranking import FETCH
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc
from tests.support import running_service

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DRILL = ("Cordless drill driver 18 V with two batteries", "Acme", ["tools", "power tools"])
CATALOG = [  # product_id, title, brand, category path, price (None: no price), in stock
    *[(f"drill-{k}", *DRILL, price, True) for k, price in enumerate((99.0, 89.0, 79.0))],  # identical text
    ("impact", "Brushless impact driver 18 V", "Globex", ["tools", "power tools"], 129.0, False),
    ("hammer-drill", "Hammer drill 1/2 in. corded 7 A", "Globex", ["tools", "power tools"], 59.0, True),
    ("drill-bits", "Titanium drill bit set, 21 pieces", "Acme", ["tools", "accessories"], 19.5, False),
    ("driver-bits", "Impact driver bit set, 45 pieces", "Initech", ["tools", "accessories"], 24.0, True),
    ("hammer", "Claw hammer 16 oz fiberglass handle", "Initech", ["tools", "hand tools"], 12.0, False),
    ("screwdrivers", "Screwdriver set, 8 pieces", "Initech", ["tools", "hand tools"], None, True),
    ("saw", "Circular saw 7-1/4 in. 15 A", "Acme", ["tools", "power tools"], 1099.0, True),
    ("hose", "Expandable garden hose 50 ft", "Hydra", ["garden", "watering"], 26.0, True),
    ("sprinkler", "Oscillating lawn sprinkler", "Hydra", ["garden", "watering"], 9.0, False),
    ("kettle", "Stainless steel electric kettle 1.7 l", "Brevo", ["kitchen", "appliances"], 27.0, True),
]
STOCK = {row[0]: row[5] for row in CATALOG}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(tmp_path_factory, registry_dir):
    messages = [("catalog", pid.encode(), encode_event(ProductUpsert(
        event_id=f"{pid}-up", event_time=T0 + timedelta(seconds=k), product_id=pid, title=title, brand=brand,
        category_path=path, price=price, in_stock=in_stock)))
        for k, (pid, title, brand, path, price, in_stock) in enumerate(CATALOG)]
    async with running_service(tmp_path_factory.mktemp("data"), registry_dir, messages=messages,
                               embedded_kafka_storage="memory") as service:
        yield service


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub(service):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield pb_grpc.SearchServiceStub(channel)


def ids(response: pb.SearchResponse) -> list[str]:
    return [hit.product_id for hit in response.hits]


async def candidates(stub, **request) -> pb.SearchResponse:
    """The candidate set of a request: its relevance ranking, FETCH.candidate_set deep."""
    return await stub.Search(pb.SearchRequest(limit=FETCH.candidate_set, **request))


@pytest.mark.parametrize("keep_duplicates", [False, True])
async def test_pages_continue_each_other_without_overlap(stub, keep_duplicates):
    request = dict(query="cordless drill", keep_duplicates=keep_duplicates)
    pages = [ids(await stub.Search(pb.SearchRequest(limit=3, offset=offset, **request))) for offset in (0, 3, 6)]
    whole = ids(await stub.Search(pb.SearchRequest(limit=9, **request)))
    assert sum(pages, []) == whole and len(set(whole)) == 9
    copies = sum(pid.startswith("drill-") and pid != "drill-bits" for pid in whole)
    assert copies == (3 if keep_duplicates else 1)


async def test_paging_past_the_end_is_an_empty_page(stub):
    everything = await candidates(stub, query="drill")
    response = await stub.Search(pb.SearchRequest(query="drill", limit=5, offset=len(everything.hits)))
    assert not response.hits


async def test_recommend_and_similar_products_page_too(stub):
    similar = [ids(await stub.SimilarProducts(pb.SimilarProductsRequest(product_id="hose", limit=2, offset=k)))
               for k in (0, 2)]
    whole = ids(await stub.SimilarProducts(pb.SimilarProductsRequest(product_id="hose", limit=4)))
    assert similar[0] + similar[1] == whole and len(whole) == 4


@pytest.mark.parametrize("sort, descending", [(pb.SORT_PRICE_ASC, False), (pb.SORT_PRICE_DESC, True)])
async def test_price_sort_orders_the_candidate_set_by_price(stub, sort, descending):
    relevance = await candidates(stub, query="drill")
    pages = [await stub.Search(pb.SearchRequest(query="drill", sort=sort, limit=4, offset=k)) for k in (0, 4, 8)]
    hits = [hit for page in pages for hit in page.hits]
    priced = sorted((hit for hit in relevance.hits if hit.price > 0), key=lambda hit: hit.price, reverse=descending)
    unpriced = [hit.product_id for hit in relevance.hits if hit.price == 0]  # no price: last, relevance order
    assert [hit.product_id for hit in hits] == [hit.product_id for hit in priced] + unpriced
    assert len(hits) == len(relevance.hits) == len(CATALOG) - 2  # two of the three drill copies collapsed
    assert {hit.product_id: hit.score for hit in hits} == pytest.approx(
        {hit.product_id: hit.score for hit in relevance.hits})  # scores stay the relevance scores


async def test_in_stock_boost_moves_in_stock_products_ahead(stub):
    plain = await candidates(stub, query="impact driver bits")
    assert [STOCK[pid] for pid in ids(plain)] != sorted((STOCK[pid] for pid in ids(plain)), reverse=True)
    boosted = await stub.Search(pb.SearchRequest(query="impact driver bits", in_stock_boost=10.0, limit=20))
    stock = [STOCK[pid] for pid in ids(boosted)]
    assert stock == sorted(stock, reverse=True) and set(ids(boosted)) == set(ids(plain))
    in_stock = [pid for pid in ids(plain) if STOCK[pid]]
    assert ids(boosted)[:len(in_stock)] == in_stock  # each group keeps its relevance order
    before = {hit.product_id: hit.score for hit in plain.hits}
    for hit in boosted.hits:
        assert hit.score == pytest.approx(before[hit.product_id] + (10.0 if hit.in_stock else 0.0), abs=1e-4)


async def test_a_small_boost_only_reorders_close_scores(stub):
    plain = await candidates(stub, query="garden hose")
    boosted = await stub.Search(pb.SearchRequest(query="garden hose", in_stock_boost=1e-6, limit=FETCH.candidate_set))
    assert ids(boosted)[0] == ids(plain)[0] == "hose"


@pytest.mark.parametrize("prefix", [[], ["tools"]])
async def test_facet_counts_equal_the_counts_of_the_candidates(stub, prefix):
    request = dict(query="drill", filter=pb.Filter(category_prefix=prefix))
    candidate_set = (await candidates(stub, **request)).hits
    facets = (await stub.Search(pb.SearchRequest(limit=2, facets=True, **request))).facets
    assert facets.candidates == len(candidate_set)
    categories = Counter(hit.category_path[len(prefix)] for hit in candidate_set)
    assert {c.value: c.count for c in facets.categories} == categories
    assert {b.value: b.count for b in facets.brands} == Counter(hit.brand.lower() for hit in candidate_set)
    bands = Counter(max(edge for edge in PRICE_EDGES if edge <= hit.price) for hit in candidate_set if hit.price)
    assert {band.min: band.count for band in facets.price_bands} == bands
    assert [c.count for c in facets.categories] == sorted((c.count for c in facets.categories), reverse=True)


async def test_no_facets_unless_asked(stub):
    response = await stub.Search(pb.SearchRequest(query="drill"))
    assert not response.HasField("facets")


@pytest.mark.parametrize("request_, field", [
    (pb.SearchRequest(query="drill", offset=-1), "offset"),
    (pb.SearchRequest(query="drill", offset=995, limit=10), "offset"),
    (pb.SearchRequest(query="drill", sort=9), "sort"),
    (pb.SearchRequest(query="drill", in_stock_boost=-1), "in_stock_boost"),
])
async def test_invalid_merchandising_fields_are_invalid_argument(stub, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Search(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)


async def test_cli_search_pages_sorts_and_prints_facets(service):
    args = ["search", "drill", "--sort", "price-desc", "--offset", "1", "--limit", "2", "--facets", "--target",
            f"127.0.0.1:{service.port}"]
    result = await asyncio.to_thread(CliRunner().invoke, main, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert rows[0].split("│")[1].strip() == "2" and "hammer-drill" not in result.output  # dearest: saw, impact
    assert "impact" in rows[0] and f"facets over {len(CATALOG) - 2} candidates" in result.output
    facet_rows = {tuple(cell.strip() for cell in line.split("│")[1:4]) for line in rows}
    assert {("brand", "acme", "3"), ("category", "tools", "8"), ("price", "1000+", "1")} <= facet_rows
    invalid = await asyncio.to_thread(CliRunner().invoke, main, [*args[:-2], "--offset", "-1", *args[-2:]])
    assert invalid.exit_code == 1 and "INVALID_ARGUMENT: offset" in invalid.output
