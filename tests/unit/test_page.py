"""The page pipeline (cartwise/page.py): ranking, collapsing, merchandising and facets of one answer, and the
engine reads it makes, over Qdrant Edge read inline (the embedded serving path)."""

import asyncio

import numpy as np
import pytest

from cartwise import popularity
from cartwise.catalog import TEXT_DIGEST, category_prefixes, point_id, text_digest
from cartwise.index import PRODUCTS_SCHEMA, EdgeIndex, IndexPoint, InlineAsyncIndex, SearchFilter
from cartwise.index.base import stock_keyword
from cartwise.lexical import LexicalEncoder
from cartwise.merchandising import FacetCounts, Merchandising
from cartwise.page import POPULAR, Page, PageRequest, Pages
from cartwise.ranking import RankingProfile
from cartwise.retrieval import RankRequest, rank
from cartwise.settings import Lexical

DIM, NAME = 8, "products_v1"
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
    index.create_collection(NAME, DIM, PRODUCTS_SCHEMA)
    index.upsert(NAME, [point(k, text) for k, text in enumerate(TEXTS)])
    yield index
    index.close()


def run(coroutine):
    return asyncio.new_event_loop().run_until_complete(coroutine)


def pids(page: Page) -> list[str]:
    return [h.hit.payload["product_id"] for h in page.hits]


def query(text: str) -> RankRequest:
    return RankRequest(vector_of(text), LEXICAL.query(text), None, 0.0, "hybrid")


def test_a_relevance_page_is_the_served_ranking_collapsed_and_sliced(edge):
    reader = Counted(InlineAsyncIndex(edge))
    pages = Pages(reader, PROFILE, hnsw_ef=64)
    request = query("acme phone")
    page = run(pages.ranked(NAME, request, PageRequest(4, SearchFilter(), Merchandising(offset=1))))
    ranking = rank(edge, NAME, request, PROFILE, 5)  # the offline evaluation's ranking of the same request
    assert pids(page) == [r.hit.payload["product_id"] for r in ranking][1:]
    assert len({h.hit.payload[TEXT_DIGEST] for h in page.hits}) == 4 and page.facets is None
    assert reader.reads == ["hybrid_search", "retrieve"]  # the first read (15) held every product (12)


def test_a_collapsed_page_grows_its_read_while_it_comes_out_short(edge):
    reader = Counted(InlineAsyncIndex(edge))
    copies = RankRequest(vector_of("acme phone"), None, None, 0.0, "dense")  # its 4 copies rank first
    spec = PageRequest(1, SearchFilter(), seen=(text_digest("acme phone"),))
    page = run(Pages(reader, PROFILE, 64).ranked(NAME, copies, spec))
    assert reader.reads == ["search", "search", "retrieve"]  # 3 read (all copies, left out), then 12
    assert len(page.hits) == 1 and page.hits[0].hit.payload[TEXT_DIGEST] != text_digest("acme phone")


def test_a_faceted_page_reads_the_candidate_set_once(edge):
    reader = Counted(InlineAsyncIndex(edge))
    options = Merchandising(sort="price_asc", facets=True)
    page = run(Pages(reader, PROFILE, 64).ranked(NAME, query("phone"), PageRequest(3, SearchFilter(), options)))
    assert reader.reads == ["hybrid_search", "retrieve", "facet", "facet"]
    assert page.facets.candidates == len(set(TEXTS))  # collapsed: one product per text
    prices = [h.hit.payload["price"] for h in page.hits]
    assert prices == sorted(prices) and len(prices) == 3


def test_texts_seen_are_left_out(edge):
    seen = (text_digest("acme phone"),)
    spec = PageRequest(10, SearchFilter(), seen=seen)
    page = run(Pages(InlineAsyncIndex(edge), PROFILE, 64).ranked(NAME, query("acme phone"), spec))
    assert seen[0] not in {h.hit.payload[TEXT_DIGEST] for h in page.hits}
    assert len(page.hits) == len(set(TEXTS)) - 1


def test_without_popularity_counts_the_popular_page_is_empty(edge):
    pages = Pages(InlineAsyncIndex(edge), PROFILE, 64)
    assert run(pages.popular(NAME, PageRequest(5, SearchFilter()))) == Page([], None)
    faceted = PageRequest(5, SearchFilter(), Merchandising(facets=True))
    assert run(pages.popular(NAME, faceted)) == Page([], FacetCounts([], [], [], 0))


def test_the_popular_page_orders_by_popularity_relative_to_the_best(edge):
    edge.create_collection(popularity.COLLECTION, 1, popularity.SCHEMA)
    counts = {"p1": 5.0, "p4": 7.0, "p5": 6.0, "p2": 4.0}  # p1 and p2 share a text
    edge.upsert(popularity.COLLECTION, [popularity.partial_point(p, 0, score, ["home"]) for p, score in counts.items()])
    reader = Counted(InlineAsyncIndex(edge))
    page = run(Pages(reader, PROFILE, 64).popular(NAME, PageRequest(3, SearchFilter())))
    assert pids(page) == ["p4", "p5", "p1"]
    assert [h.hit.score for h in page.hits] == pytest.approx([1.0, 2.0 ** -1, 2.0 ** -2])
    assert all(h.semantic == h.personal == h.lexical == 0.0 for h in page.hits)
    assert reader.reads == ["scroll", "scroll"] and POPULAR.query is None
