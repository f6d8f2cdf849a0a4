"""The page pipeline (cartwise/page.py): ranking, collapsing, merchandising and facets of one answer, and the
engine reads it makes, over Qdrant Edge read inline (the embedded serving path), with the products indexed
as the service indexes them (their text groups: cartwise/groups.py)."""

import asyncio

import numpy as np
import pytest

from cartwise import popularity
from cartwise.catalog import TEXT_DIGEST, category_prefixes, point_id, text_digest
from cartwise.groups import upsert_products
from cartwise.index import GROUPS_SCHEMA, PRODUCTS_SCHEMA, EdgeIndex, IndexPoint, InlineAsyncIndex, SearchFilter
from cartwise.index.base import stock_keyword
from cartwise.lexical import LexicalEncoder
from cartwise.lifecycle import collection_names
from cartwise.merchandising import FacetCounts, Merchandising
from cartwise.page import POPULAR, Page, PageRequest, Pages
from cartwise.ranking import RankingProfile, fuse
from cartwise.retrieval import RankRequest, rank
from cartwise.settings import Lexical

DIM, NAMES = 8, collection_names("v1")
TEXTS = ["acme phone"] * 4 + ["globex phone", "acme charger", "initech lamp"] * 2 + ["acme mug", "globex case"]
PROFILE = RankingProfile.from_settings(Lexical())
LEXICAL = LexicalEncoder(Lexical())


def vector_of(text: str) -> np.ndarray:
    v = np.random.default_rng(abs(hash(text)) % 2**32).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def point(k: int, text: str) -> IndexPoint:
    in_stock = k % 3 != 0
    payload = {"product_id": f"p{k}", TEXT_DIGEST: text_digest(text), "brand": text.split()[0],
               "category_prefixes": category_prefixes(["home", text.split()[1]]), "price": 10.0 + 7 * k,
               "in_stock": in_stock, "stock": stock_keyword(in_stock)}
    return IndexPoint(point_id(f"p{k}"), vector_of(text), payload, LEXICAL.document(text))


class Counted:
    """An AsyncVectorIndex that records the name of every read it passes on."""

    def __init__(self, reader) -> None:
        self.reader, self.reads = reader, []

    def __getattr__(self, name):
        self.reads.append(name)
        return getattr(self.reader, name)


@pytest.fixture
def edge(tmp_path):
    index = EdgeIndex(tmp_path / "qdrant")
    index.create_collection(NAMES.products, DIM, PRODUCTS_SCHEMA)
    index.create_collection(NAMES.groups, DIM, GROUPS_SCHEMA)
    upsert_products(index, NAMES.products, NAMES.groups, [point(k, text) for k, text in enumerate(TEXTS)])
    yield index
    index.close()


def run(coroutine):
    return asyncio.new_event_loop().run_until_complete(coroutine)


def pids(page: Page) -> list[str]:
    return [h.hit.payload["product_id"] for h in page.hits]


def query(text: str) -> RankRequest:
    return RankRequest(vector_of(text), LEXICAL.query(text), None, 0.0, "hybrid")


def copies(text: str, matching=lambda k: True) -> list[str]:
    """The products of ``text`` that ``matching`` (of their number) keeps, in point-id order."""
    return sorted((f"p{k}" for k, t in enumerate(TEXTS) if t == text and matching(k)), key=point_id)


def test_a_relevance_page_is_the_served_ranking_collapsed_and_sliced_in_one_read(edge):
    reader = Counted(InlineAsyncIndex(edge))
    pages = Pages(reader, PROFILE, hnsw_ef=64)
    request = query("acme phone")
    page = run(pages.ranked(NAMES, request, PageRequest(4, SearchFilter(), Merchandising(offset=1))))
    ranking = rank(edge, NAMES.groups, request, PROFILE, 5)  # the offline evaluation's ranking of the same request
    assert pids(page) == [r.hit.payload["product_id"] for r in ranking][1:]
    assert len({h.hit.payload[TEXT_DIGEST] for h in page.hits}) == 4 and page.facets is None
    assert reader.reads == ["hybrid_search"]
    assert ranking[0].hit.payload["product_id"] == copies("acme phone")[0]  # a text shows its first product
    parts = ranking[0]
    assert parts.semantic == pytest.approx(float(request.query @ vector_of("acme phone")), abs=1e-5)
    assert parts.hit.score == pytest.approx(fuse(parts.semantic, parts.lexical, PROFILE.lexical_weight, PROFILE.lexical_scale), abs=1e-4)


def test_a_page_of_copies_is_one_read_whatever_their_number(edge):
    reader = Counted(InlineAsyncIndex(edge))
    dense = RankRequest(vector_of("acme phone"), None, None, 0.0, "dense")  # its 4 copies rank first
    page = run(Pages(reader, PROFILE, 64).ranked(NAMES, dense, PageRequest(2, SearchFilter())))
    assert pids(page)[0] == copies("acme phone")[0] and len({h.hit.payload[TEXT_DIGEST] for h in page.hits}) == 2
    every = run(Pages(reader, PROFILE, 64).ranked(NAMES, dense, PageRequest(5, SearchFilter(), collapse=False)))
    assert pids(every)[:4] == copies("acme phone")  # keep_duplicates: every copy, in point-id order
    assert reader.reads == ["search", "search"]


def test_a_dense_page_by_the_query_alone_reads_no_vectors_and_takes_its_parts_from_the_score(edge):
    dense = RankRequest(vector_of("globex case"), None, None, 0.0, "dense")
    page = run(Pages(InlineAsyncIndex(edge), PROFILE, 64).ranked(NAMES, dense, PageRequest(3, SearchFilter())))
    assert all(h.hit.vector is None and h.semantic == h.hit.score and h.personal == 0.0 for h in page.hits)
    assert page.hits[0].semantic == pytest.approx(1.0, abs=1e-5)


def test_a_filter_on_a_products_own_fields_shows_a_copy_that_matches_it(edge):
    in_stock = lambda k: k % 3 != 0  # noqa: E731 - as point() stocks them
    dense = RankRequest(vector_of("acme phone"), None, None, 0.0, "dense")
    for flt, kept in [(SearchFilter(in_stock=True), in_stock), (SearchFilter(in_stock=False), lambda k: not in_stock(k)),
                      (SearchFilter(price_min=20.0, in_stock=True), lambda k: 10.0 + 7 * k >= 20.0 and in_stock(k)),
                      (SearchFilter(exclude_ids=frozenset({point_id(copies("acme phone")[0])})),
                       lambda k: f"p{k}" != copies("acme phone")[0])]:
        page = run(Pages(InlineAsyncIndex(edge), PROFILE, 64).ranked(NAMES, dense, PageRequest(1, flt)))
        assert pids(page) == copies("acme phone", kept)[:1], flt
        every = run(Pages(InlineAsyncIndex(edge), PROFILE, 64).ranked(NAMES, dense, PageRequest(4, flt, collapse=False)))
        assert sorted(pids(every)[:len(copies("acme phone", kept))], key=point_id) == copies("acme phone", kept), flt


def test_a_faceted_page_reads_the_candidate_set_once(edge):
    reader = Counted(InlineAsyncIndex(edge))
    options = Merchandising(sort="price_asc", facets=True)
    page = run(Pages(reader, PROFILE, 64).ranked(NAMES, query("phone"), PageRequest(3, SearchFilter(), options)))
    assert reader.reads == ["hybrid_search", "facet", "facet"]
    assert page.facets.candidates == len(set(TEXTS))  # collapsed: one product per text
    prices = [h.hit.payload["price"] for h in page.hits]
    assert prices == sorted(prices) and len(prices) == 3


def test_texts_excluded_are_left_out(edge):
    excluded = frozenset({text_digest("acme phone")})
    spec = PageRequest(10, SearchFilter(exclude_texts=excluded))
    page = run(Pages(InlineAsyncIndex(edge), PROFILE, 64).ranked(NAMES, query("acme phone"), spec))
    assert not excluded & {h.hit.payload[TEXT_DIGEST] for h in page.hits}
    assert len(page.hits) == len(set(TEXTS)) - 1


def test_without_popularity_counts_the_popular_page_is_empty(edge):
    pages = Pages(InlineAsyncIndex(edge), PROFILE, 64)
    assert run(pages.popular(NAMES, PageRequest(5, SearchFilter()))) == Page([], None)
    faceted = PageRequest(5, SearchFilter(), Merchandising(facets=True))
    assert run(pages.popular(NAMES, faceted)) == Page([], FacetCounts([], [], [], 0))


def test_the_popular_page_orders_by_popularity_relative_to_the_best(edge):
    edge.create_collection(popularity.COLLECTION, 1, popularity.SCHEMA)
    counts = {"p1": 5.0, "p4": 7.0, "p5": 6.0, "p2": 4.0}  # p1 and p2 share a text
    edge.upsert(popularity.COLLECTION, [popularity.partial_point(p, 0, score, ["home"]) for p, score in counts.items()])
    reader = Counted(InlineAsyncIndex(edge))
    page = run(Pages(reader, PROFILE, 64).popular(NAMES, PageRequest(3, SearchFilter())))
    assert pids(page) == ["p4", "p5", "p1"]
    assert [h.hit.score for h in page.hits] == pytest.approx([1.0, 2.0 ** -1, 2.0 ** -2])
    assert all(h.semantic == h.personal == h.lexical == 0.0 for h in page.hits)
    assert reader.reads == ["scroll", "scroll"] and POPULAR.query is None
