"""One contract for both VectorIndex backends, Qdrant Edge and qdrant-client (local mode), and for both
AsyncVectorIndex implementations of the serving path's reads: AsyncQdrantServerIndex (AsyncQdrantClient's
local mode) and InlineAsyncIndex over Qdrant Edge."""

import asyncio
import math
import warnings

import grpc
import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from cartwise.catalog import category_prefixes, point_id, text_digest
from cartwise.groups import delete_products, group_id, products_of, upsert_products
from cartwise.index import (
    GROUPS_SCHEMA,
    MEMBERS,
    PRODUCTS_SCHEMA,
    TEXT_DIGEST,
    USERS_SCHEMA,
    AsyncQdrantServerIndex,
    EdgeIndex,
    HybridQuery,
    IndexPoint,
    IndexUnavailable,
    InlineAsyncIndex,
    QdrantServerIndex,
    SearchFilter,
)
from cartwise.index.base import stock_keyword
from cartwise.index.server import delete_call, engine_errors, set_payload_call, upsert_call
from cartwise.lexical import LexicalEncoder
from cartwise.settings import Lexical

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DIM = 8
NAME = "products_v1"
PRODUCTS = [  # product_id, category path, brand, price, in_stock
    ("p0", ["electronics", "phone"], "Acme", 100.0, True),
    ("p1", ["electronics", "phone"], "Globex", 250.0, False),
    ("p2", ["electronics", "laptop"], "Acme", 999.0, True),
    ("p3", ["home", "kitchen"], "Initech", 20.0, True),
    ("p4", ["home", "kitchen", "mug"], "ACME", 5.0, False),
    ("p5", ["electronics"], None, None, True),
    ("p6", ["home"], "Globex", 50.0, True),
    ("p7", [], "Initech", 250.0, True),
]


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


VECTORS = unit_vectors(len(PRODUCTS))


def payload(pid, path, brand, price, in_stock) -> dict:
    p = {"product_id": pid, "category_prefixes": category_prefixes(path), "in_stock": in_stock,
         "stock": stock_keyword(in_stock)}
    if brand is not None:
        p["brand"] = brand.lower()
    if price is not None:
        p["price"] = price
    return p


POINTS = [IndexPoint(point_id(row[0]), VECTORS[k], payload(*row)) for k, row in enumerate(PRODUCTS)]


READS = ("has_collection", "retrieve", "search", "lexical_search", "hybrid_search", "scroll", "facet", "count")


class Awaited:
    """The contract's (blocking) face of an AsyncVectorIndex: its reads, and its other coroutine methods,
    run to completion on a private event loop; any other method is ``loader``'s, the blocking writer of the
    same collections (a test that needs a method neither has is skipped)."""

    def __init__(self, reader, loader) -> None:
        self.reader, self.loader, self.loop = reader, loader, asyncio.new_event_loop()

    def __getattr__(self, name):
        method = getattr(self.reader, name, None)
        if asyncio.iscoroutinefunction(method):
            return lambda *args, **kwargs: self.loop.run_until_complete(method(*args, **kwargs))
        loaded = getattr(self.loader, name, None)
        if loaded is None:
            pytest.skip(f"{type(self.reader).__name__} has no {name}")
        return loaded

    def close(self) -> None:
        self.loop.run_until_complete(self.reader.close())
        if self.loader is not None:
            self.loader.close()
        self.loop.close()


class AsyncClientLoader:
    """Writes into the collections of an ``AsyncQdrantClient`` (local mode keeps them in that client) with the
    server backend's own requests (:func:`upsert_call`, :func:`delete_call`, :func:`set_payload_call`) and
    error mapping: the async reader only reads. ``loop`` is the one the reader's calls run on."""

    def __init__(self, client: AsyncQdrantClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client, self.loop = client, loop

    def upsert(self, name, points) -> None:
        self._write(name, upsert_call(points))

    def delete(self, name, ids) -> None:
        self._write(name, delete_call(ids))

    def set_payload(self, name, point, payload) -> None:
        self._write(name, set_payload_call(point, payload))

    def _write(self, name, call) -> None:
        if call.method is not None:
            with engine_errors(name):
                self.loop.run_until_complete(getattr(self.client, call.method)(name, **call.kwargs))

    def close(self) -> None:
        return None


def test_the_async_readers_have_every_read():
    for reader in (AsyncQdrantServerIndex, InlineAsyncIndex):
        assert all(asyncio.iscoroutinefunction(getattr(reader, name)) for name in (*READS, "close"))


@pytest.fixture(params=["edge", "server", "edge-inline-async", "server-async"])
def index(request, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if request.param == "edge":
            idx = EdgeIndex(tmp_path / "qdrant")
        elif request.param == "server":
            idx = QdrantServerIndex(QdrantClient(":memory:"))
        elif request.param == "edge-inline-async":
            edge = EdgeIndex(tmp_path / "qdrant")
            idx = Awaited(InlineAsyncIndex(edge), edge)
        else:
            client = AsyncQdrantClient(":memory:")
            idx = Awaited(AsyncQdrantServerIndex(client), None)
            idx.loader = AsyncClientLoader(client, idx.loop)
    yield idx
    idx.close()


def loaded(index, points):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        index.create_collection(NAME, DIM, PRODUCTS_SCHEMA)
    index.upsert(NAME, points)
    return index


@pytest.fixture
def products(index):
    return loaded(index, POINTS)


def ids_of(hits) -> list[str]:
    return [h.payload["product_id"] for h in hits]


def search_ids(index, flt, query=None, limit=100) -> set[str]:
    q = VECTORS[0] if query is None else query
    return set(ids_of(index.search(NAME, q, limit, flt, exact=True)))


def test_create_has_collections_drop(index):
    assert index.collections() == []
    assert not index.has_collection("a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        index.create_collection("b", DIM, USERS_SCHEMA)
        index.create_collection("a", DIM, PRODUCTS_SCHEMA)
        index.create_collection("a", DIM, PRODUCTS_SCHEMA)  # no-op
    assert index.has_collection("a") and index.has_collection("b")
    assert index.collections() == ["a", "b"]
    index.drop_collection("a")
    index.drop_collection("a")  # no-op
    index.drop_collection("never")
    assert index.collections() == ["b"]
    assert not index.has_collection("a")


def test_upsert_count_and_replace(products):
    assert products.count(NAME) == len(PRODUCTS)
    replaced = IndexPoint(POINTS[0].id, VECTORS[1], {**POINTS[0].payload, "price": 1.0})
    products.upsert(NAME, [replaced])
    products.upsert(NAME, [])
    assert products.count(NAME) == len(PRODUCTS)
    (hit,) = products.retrieve(NAME, [POINTS[0].id])
    assert hit.payload["price"] == 1.0
    np.testing.assert_allclose(hit.vector, VECTORS[1], atol=1e-6)


def test_retrieve_payload_and_vector(products):
    hits = products.retrieve(NAME, [POINTS[2].id, point_id("missing"), POINTS[5].id])
    by_id = {h.id: h for h in hits}
    assert set(by_id) == {POINTS[2].id, POINTS[5].id}
    for k in (2, 5):
        hit = by_id[POINTS[k].id]
        assert hit.payload == POINTS[k].payload
        assert hit.score == 0.0
        assert hit.vector.dtype == np.float32 and hit.vector.shape == (DIM,)
        np.testing.assert_allclose(hit.vector, VECTORS[k], atol=1e-6)
    assert all(h.vector is None for h in products.retrieve(NAME, [POINTS[2].id], with_vectors=False))
    assert products.retrieve(NAME, []) == []


def test_search_orders_by_inner_product(products):
    query = unit_vectors(1, seed=42)[0]
    hits = products.search(NAME, query, 5)
    expected = np.argsort(-(VECTORS @ query))[:5]
    assert [h.id for h in hits] == [POINTS[k].id for k in expected]
    np.testing.assert_allclose([h.score for h in hits], (VECTORS @ query)[expected], atol=1e-5)
    assert all(h.vector is None for h in hits)
    with_vec = products.search(NAME, query, 2, with_vectors=True)
    np.testing.assert_allclose(with_vec[0].vector, VECTORS[expected[0]], atol=1e-6)


def test_search_exact_equals_brute_force(index):
    vectors = unit_vectors(300, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        index.create_collection("big", DIM, USERS_SCHEMA)
    index.upsert("big", [IndexPoint(point_id(str(k)), v, {"product_id": str(k)}) for k, v in enumerate(vectors)])
    for query in unit_vectors(5, seed=8):
        hits = index.search("big", query, 10, exact=True)
        expected = np.argsort(-(vectors @ query), kind="stable")[:10]
        assert ids_of(hits) == [str(k) for k in expected]
        np.testing.assert_allclose([h.score for h in hits], (vectors @ query)[expected], atol=1e-5)


def test_filter_category_prefix(products):
    assert search_ids(products, SearchFilter(category_prefix=("electronics",))) == {"p0", "p1", "p2", "p5"}
    assert search_ids(products, SearchFilter(category_prefix=("electronics", "phone"))) == {"p0", "p1"}
    assert search_ids(products, SearchFilter(category_prefix=("home", "kitchen"))) == {"p3", "p4"}
    assert search_ids(products, SearchFilter(category_prefix=("phone",))) == set()


def test_filter_brands_case_insensitive(products):
    assert search_ids(products, SearchFilter(brands=("acme",))) == {"p0", "p2", "p4"}
    assert search_ids(products, SearchFilter(brands=("ACME", "gLoBeX"))) == {"p0", "p1", "p2", "p4", "p6"}
    assert search_ids(products, SearchFilter(brands=("nobody",))) == set()


def test_filter_price_range_inclusive(products):
    assert search_ids(products, SearchFilter(price_min=20.0, price_max=250.0)) == {"p0", "p1", "p3", "p6", "p7"}
    assert search_ids(products, SearchFilter(price_min=250.0)) == {"p1", "p2", "p7"}
    assert search_ids(products, SearchFilter(price_max=20.0)) == {"p3", "p4"}
    assert search_ids(products, SearchFilter(price_min=250.0, price_max=250.0)) == {"p1", "p7"}


def test_filter_in_stock(products):
    assert search_ids(products, SearchFilter(in_stock=False)) == {"p1", "p4"}
    assert search_ids(products, SearchFilter(in_stock=True)) == {"p0", "p2", "p3", "p5", "p6", "p7"}


def test_filter_exclude_ids(products):
    excluded = frozenset({point_id("p0"), point_id("p3"), point_id("missing")})
    assert search_ids(products, SearchFilter(exclude_ids=excluded)) == {f"p{k}" for k in (1, 2, 4, 5, 6, 7)}


def test_filter_ids_keeps_only_those(products):
    kept = frozenset({point_id("p0"), point_id("p3"), point_id("p4"), point_id("missing")})
    assert search_ids(products, SearchFilter(ids=kept)) == {"p0", "p3", "p4"}
    assert search_ids(products, SearchFilter(ids=kept, exclude_ids=frozenset({point_id("p3")}))) == {"p0", "p4"}


def test_scroll_filters_and_orders_by_a_float_field(products):
    by_price = products.scroll(NAME, 3, SearchFilter(category_prefix=("electronics",)), order_by="price")
    assert ids_of(by_price) == ["p2", "p1", "p0"]  # p5 has no price
    everything = products.scroll(NAME, 100, with_vectors=True)
    assert sorted(ids_of(everything)) == sorted(row[0] for row in PRODUCTS)
    assert all(hit.score == 0.0 and hit.vector.shape == (DIM,) for hit in everything)
    assert products.scroll(NAME, 100)[0].vector is None


def test_facet_counts_keyword_values_of_the_filtered_points(products):
    assert products.facet(NAME, "brand", 10) == [("acme", 3), ("globex", 2), ("initech", 2)]
    assert products.facet(NAME, "brand", 10, SearchFilter(in_stock=True)) == [("acme", 2), ("initech", 2),
                                                                             ("globex", 1)]


def test_facet_counts_each_value_of_a_list_and_keeps_the_most_frequent(products):
    kept = frozenset(point_id(p) for p in ("p0", "p1", "p4"))
    assert products.facet(NAME, "category_prefixes", 10, SearchFilter(ids=kept)) == [
        ("electronics", 2), ("electronics > phone", 2), ("home", 1), ("home > kitchen", 1),
        ("home > kitchen > mug", 1)]
    assert products.facet(NAME, "category_prefixes", 2) == [("electronics", 4), ("home", 3)]
    approximate = products.facet(NAME, "category_prefixes", 10, SearchFilter(ids=kept), exact=False)
    assert approximate == products.facet(NAME, "category_prefixes", 10, SearchFilter(ids=kept))


def test_filters_combine_with_and(products):
    flt = SearchFilter(category_prefix=("electronics",), brands=("Acme",), price_max=500.0)
    assert search_ids(products, flt) == {"p0"}
    flt = SearchFilter(category_prefix=("electronics",), exclude_ids=frozenset({point_id("p0")}), price_min=100.0)
    assert search_ids(products, flt) == {"p1", "p2"}


def test_in_stock_combines_with_other_filters(products):
    flt = SearchFilter(category_prefix=("electronics",), brands=("Acme",), in_stock=True)
    assert search_ids(products, flt) == {"p0", "p2"}


def test_empty_filter_is_no_filter(products):
    assert search_ids(products, SearchFilter()) == {row[0] for row in PRODUCTS}


def test_filtered_search_keeps_order_and_limit(products):
    query = unit_vectors(1, seed=3)[0]
    flt = SearchFilter(brands=("acme", "globex", "initech"))
    hits = products.search(NAME, query, 3, flt, exact=True)
    allowed = [k for k, row in enumerate(PRODUCTS) if row[2] is not None]
    expected = sorted(allowed, key=lambda k: -float(VECTORS[k] @ query))[:3]
    assert ids_of(hits) == [PRODUCTS[k][0] for k in expected]


def test_delete(products):
    products.delete(NAME, [POINTS[0].id, point_id("missing")])
    products.delete(NAME, [])
    assert products.count(NAME) == len(PRODUCTS) - 1
    assert products.retrieve(NAME, [POINTS[0].id]) == []
    assert "p0" not in search_ids(products, None)


@pytest.mark.parametrize("call", [
    lambda i: i.upsert("nope", POINTS[:1]),
    lambda i: i.delete("nope", [POINTS[0].id]),
    lambda i: i.retrieve("nope", [POINTS[0].id]),
    lambda i: i.search("nope", VECTORS[0], 3),
    lambda i: i.count("nope"),
    lambda i: i.facet("nope", "brand", 3),
])
def test_missing_collection_raises_key_error(index, call):
    with pytest.raises(KeyError, match="'nope' does not exist"):
        call(index)


def test_lexical_queries_of_a_missing_collection_raise_key_error(index):
    with pytest.raises(KeyError):
        index.lexical_search("nope", LEXICAL.query("phone"), 3)
    with pytest.raises(KeyError):
        index.hybrid_search("nope", HybridQuery(VECTORS[0], LEXICAL.query("phone"), 0.5, 0.15, 100), 3)


@pytest.mark.parametrize("error", [
    UnexpectedResponse(404, "Not Found", b'{"status":{"error":"Not found: Collection `nope` doesn\'t exist!"}}', {}),
    grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(),
                         "Not found: Collection `nope` doesn't exist!"),
    ValueError("Collection nope not found"),
])
def test_the_servers_missing_collection_answers_are_key_errors(error):
    """REST and gRPC answers cannot come from local mode (no Qdrant server can be installed here)."""
    with pytest.raises(KeyError, match="'nope' does not exist"), engine_errors("nope"):
        raise error


@pytest.mark.parametrize("error", [
    grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connect failed"),
    ResponseHandlingException(ConnectionRefusedError("connection refused")),
])
def test_a_server_that_does_not_answer_is_index_unavailable(error):
    with pytest.raises(IndexUnavailable, match="Qdrant server unavailable: connect"), engine_errors("nope"):
        raise error


@pytest.mark.parametrize("error", [
    UnexpectedResponse(400, "Bad Request", b"{}", {}),
    grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata(), "bad vector"),
    ValueError("Collection other not found"),
    ValueError("Wrong input: Vector dimension error"),
])
def test_other_errors_pass_unchanged(error):
    with pytest.raises(type(error)), engine_errors("nope"):
        raise error


def test_edge_persistence(tmp_path):
    root = tmp_path / "qdrant"
    idx = EdgeIndex(root)
    idx.create_collection(NAME, DIM, PRODUCTS_SCHEMA)
    idx.upsert(NAME, POINTS)
    idx.close()
    reopened = EdgeIndex(root)
    try:
        assert reopened.collections() == [NAME]
        assert reopened.count(NAME) == len(PRODUCTS)
        (hit,) = reopened.retrieve(NAME, [POINTS[3].id])
        assert hit.payload == POINTS[3].payload
        np.testing.assert_allclose(hit.vector, VECTORS[3], atol=1e-6)
        assert search_ids(reopened, SearchFilter(brands=("acme",))) == {"p0", "p2", "p4"}
    finally:
        reopened.close()


def test_edge_drop_removes_files(tmp_path):
    idx = EdgeIndex(tmp_path)
    idx.create_collection("gone", DIM, USERS_SCHEMA)
    idx.drop_collection("gone")
    idx.close()
    assert not (tmp_path / "gone").exists()
    assert EdgeIndex(tmp_path).collections() == []


# --- lexical and hybrid retrieval (both backends) ------------------------------------------------------------
TEXTS = ["Acme phone with cordless charger", "Globex phone case", "Acme laptop charger", "Initech kitchen knife",
         "Acme coffee mug", "phone", "Globex home lamp", "Initech desk lamp with charger"]
LEXICAL = LexicalEncoder(Lexical())
HYBRID_POINTS = [IndexPoint(p.id, p.vector, p.payload, LEXICAL.document(t)) for p, t in zip(POINTS, TEXTS)]


@pytest.fixture
def hybrid(index):
    return loaded(index, HYBRID_POINTS)


def bm25(query: str, k: int) -> float:
    """BM25 of TEXTS[k] by hand: Σ over query terms of idf(t) · the document's stored term weight."""
    doc, n_docs = LEXICAL.document(TEXTS[k]), len(TEXTS)
    score = 0.0
    for term in LEXICAL.query(query).indices:
        df = sum(term in LEXICAL.document(t).indices for t in TEXTS)
        if term in doc.indices:
            score += math.log(1 + (n_docs - df + 0.5) / (df + 0.5)) * doc.values[doc.indices.index(term)]
    return score


def test_lexical_search_is_bm25_with_the_engines_idf(hybrid):
    hits = hybrid.lexical_search(NAME, LEXICAL.query("cordless chargers"), 10, with_vectors=True)
    assert ids_of(hits) == ["p0", "p2", "p7"]  # "cordless" is rarer than "charger"
    for hit in hits:
        k = int(hit.payload["product_id"][1:])
        assert hit.score == pytest.approx(bm25("cordless chargers", k), rel=1e-4) == hit.lexical_score
        np.testing.assert_allclose(hit.vector, VECTORS[k], atol=1e-6)
    assert hybrid.lexical_search(NAME, LEXICAL.query("the of and"), 10) == []


def test_hybrid_scores_every_candidate_of_the_union_by_both_sides(hybrid):
    dense, w, text = unit_vectors(1, seed=5)[0], 0.4, "acme charger"
    query = HybridQuery(dense, LEXICAL.query(text), w, 0.15, candidates=3)
    union = set(ids_of(hybrid.lexical_search(NAME, query.lexical, 3))) | set(ids_of(hybrid.search(NAME, dense, 3,
                                                                                              exact=True)))
    fused = {f"p{k}": (1 - w) * float(dense @ VECTORS[k]) + w * 0.15 * bm25(text, k) for k in range(len(TEXTS))}
    expected = sorted(union, key=lambda pid: -fused[pid])[:3]
    hits = hybrid.hybrid_search(NAME, query, 3)
    assert ids_of(hits) == expected
    for hit in hits:
        k = int(hit.payload["product_id"][1:])
        assert hit.lexical_score == pytest.approx(bm25(text, k), abs=1e-4)
        assert hit.score == pytest.approx(fused[hit.payload["product_id"]], abs=1e-5)
        np.testing.assert_allclose(hit.vector, VECTORS[k], atol=1e-6)


def test_hybrid_filters_apply_to_both_sides(hybrid):
    query = HybridQuery(VECTORS[0], LEXICAL.query("acme charger"), 0.5, 0.15, candidates=8)
    flt = SearchFilter(brands=("globex", "initech"), exclude_ids=frozenset({point_id("p7")}))
    assert set(ids_of(hybrid.hybrid_search(NAME, query, 10, flt))) == {"p1", "p3", "p6"}


def test_hybrid_with_weight_zero_is_dense_and_an_empty_lexical_query_is_allowed(hybrid):
    dense = unit_vectors(1, seed=9)[0]
    dense_only = ids_of(hybrid.search(NAME, dense, 3, exact=True))
    for lexical, w in ((LEXICAL.query("charger"), 0.0), (LEXICAL.query("the"), 0.5)):
        hits = hybrid.hybrid_search(NAME, HybridQuery(dense, lexical, w, 0.15, candidates=8), 3)
        assert ids_of(hits) == dense_only


def test_lexical_queries_need_lexical_vectors(index):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        index.create_collection("users", DIM, USERS_SCHEMA)
    with pytest.raises(ValueError, match="no lexical vectors"):
        index.lexical_search("users", LEXICAL.query("phone"), 3)
    with pytest.raises(ValueError, match="no lexical vectors"):
        index.hybrid_search("users", HybridQuery(VECTORS[0], LEXICAL.query("phone"), 0.5, 0.15, 100), 3)


def test_both_backends_rank_hybrid_alike(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backends = [EdgeIndex(tmp_path / "qdrant"), QdrantServerIndex(QdrantClient(":memory:"))]
        for backend in backends:
            backend.create_collection(NAME, DIM, PRODUCTS_SCHEMA)
            backend.upsert(NAME, HYBRID_POINTS)
    try:
        for seed, text in enumerate(["acme phone", "lamp", "globex charger case", "mug knife"]):
            query = HybridQuery(unit_vectors(1, seed=seed)[0], LEXICAL.query(text), 0.5, 0.15, candidates=4)
            edge, server = (b.hybrid_search(NAME, query, 5) for b in backends)
            assert ids_of(edge) == ids_of(server)
            np.testing.assert_allclose([h.score for h in edge], [h.score for h in server], atol=1e-5)
    finally:
        for backend in backends:
            backend.close()


# --- text groups (cartwise/groups.py): one point per product text, its products' fields nested --------------

GROUPS = "groups_v1"
TEXT_ROWS = [("a1", "drill", 10.0, True), ("a2", "drill", 20.0, False), ("a3", "drill", 30.0, True),
             ("b1", "saw", 25.0, False)]


def text_point(pid: str, text: str, price: float, in_stock: bool) -> IndexPoint:
    body = {**payload(pid, ["tools"], "Acme", price, in_stock), "title": text, TEXT_DIGEST: text_digest(text)}
    return IndexPoint(point_id(pid), unit_vectors(1, seed=len(text))[0], body)


@pytest.fixture
def grouped(index):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        index.create_collection(NAME, DIM, PRODUCTS_SCHEMA)
        index.create_collection(GROUPS, DIM, GROUPS_SCHEMA)
    upsert_products(index, NAME, GROUPS, [text_point(*row) for row in TEXT_ROWS])
    return index


def shown(index, flt: SearchFilter, every: bool = False) -> list[str]:
    """Product ids a page shows for ``flt``: the groups' matching products, best group first."""
    hits = index.search(GROUPS, unit_vectors(1, seed=len("drill"))[0], 10, flt.of_groups(), exact=True)
    return [p.payload["product_id"] for hit in hits for p in products_of(hit, flt.of_groups(), every)]


def test_a_text_is_one_group_of_its_products_in_point_id_order(grouped):
    assert grouped.count(GROUPS) == 2 and grouped.count(NAME) == 4
    drills = sorted(["a1", "a2", "a3"], key=point_id)
    assert shown(grouped, SearchFilter(), every=True) == [*drills, "b1"]
    assert shown(grouped, SearchFilter()) == [drills[0], "b1"]


@pytest.mark.parametrize("flt, expected", [
    (SearchFilter(price_min=25.0), {"a3", "b1"}),
    (SearchFilter(in_stock=False), {"a2", "b1"}),
    (SearchFilter(price_min=25.0, in_stock=False), {"b1"}),  # one product must match both: a2 is cheaper
    (SearchFilter(price_max=15.0, in_stock=True), {"a1"}),
    (SearchFilter(exclude_ids=frozenset({point_id("a1"), point_id("a3")})), {"a2", "b1"}),
    (SearchFilter(ids=frozenset({point_id("a2")})), {"a2"}),
    (SearchFilter(exclude_texts=frozenset({text_digest("drill")})), {"b1"}),
    (SearchFilter(texts=frozenset({text_digest("drill")}), in_stock=True), {"a1", "a3"}),
])
def test_a_grouped_filter_matches_the_products_own_fields_on_one_product(grouped, flt, expected):
    assert set(shown(grouped, flt, every=True)) == expected
    groups_shown = shown(grouped, flt)
    assert len(groups_shown) == len({pid[0] for pid in expected}) and set(groups_shown) <= expected


def test_regrouping_follows_writes_text_changes_and_deletes(grouped):
    if not hasattr(grouped, "set_payload"):
        pytest.skip("a reader cannot write")
    drill = group_id(text_digest("drill"))
    upsert_products(grouped, NAME, GROUPS, [text_point("a2", "saw", 21.0, True)], replaced=[text_digest("drill")])
    members = lambda group: sorted(m["product_id"] for m in grouped.retrieve(GROUPS, [group], False)[0].payload[MEMBERS])  # noqa: E731
    assert members(drill) == ["a1", "a3"] and members(group_id(text_digest("saw"))) == ["a2", "b1"]
    delete_products(grouped, NAME, GROUPS, [point_id("a1"), point_id("a3")])
    assert grouped.retrieve(GROUPS, [drill], False) == [] and grouped.count(GROUPS) == 1


def test_a_text_whose_group_is_missing_is_left_to_its_next_upsert(grouped):
    if not hasattr(grouped, "set_payload"):
        pytest.skip("a reader cannot write")
    drill = group_id(text_digest("drill"))
    grouped.delete(GROUPS, [drill])  # as in an index written before the groups, while it is repaired
    delete_products(grouped, NAME, GROUPS, [point_id("a1")])
    assert grouped.retrieve(GROUPS, [drill], False) == []
    upsert_products(grouped, NAME, GROUPS, [text_point("a2", "drill", 22.0, True)])
    members = grouped.retrieve(GROUPS, [drill], False)[0].payload[MEMBERS]
    assert sorted(m["product_id"] for m in members) == ["a2", "a3"]
