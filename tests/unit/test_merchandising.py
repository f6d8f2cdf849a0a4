"""Merchandising (cartwise/merchandising.py): validation of offset, sort, in-stock boost and facets, and the
pure page logic (boost, price sort, slicing, category levels, price bands)."""

import pytest

from cartwise.index import IndexHit
from cartwise.merchandising import (
    Merchandising,
    PriceBand,
    arrange,
    next_level,
    price_bands,
)
from cartwise.ranking import FETCH
from cartwise.retrieval import RankedHit
from cartwise.v1 import search_pb2 as pb
from grpc_api.validation import InvalidRequest, validate_recommend, validate_search, validate_similar


def field_of(call) -> str:
    with pytest.raises(InvalidRequest) as err:
        call()
    return err.value.field


def search(**kw):
    return validate_search(pb.SearchRequest(query="drill", **kw), 512)


@pytest.mark.parametrize("offset, limit", [(-1, 10), (991, 10), (1, 1000), (0, 1001)])
def test_offset_must_be_non_negative_and_offset_plus_limit_at_most_1000(offset, limit):
    assert field_of(lambda: search(offset=offset, limit=limit)) == ("limit" if limit > 1000 else "offset")
    if limit <= 1000:
        assert field_of(lambda: validate_recommend(pb.RecommendRequest(user_id="u", offset=offset, limit=limit))) \
            == "offset"
        assert field_of(lambda: validate_similar(pb.SimilarProductsRequest(product_id="p", offset=offset,
                                                                           limit=limit))) == "offset"


def test_valid_merchandising_fields_and_defaults():
    assert search().merchandising == Merchandising()
    assert search(offset=990, limit=10).merchandising.offset == 990
    assert validate_recommend(pb.RecommendRequest(user_id="u", offset=20)).merchandising == Merchandising(offset=20)
    options = search(sort=pb.SORT_PRICE_DESC, in_stock_boost=0.5, facets=True).merchandising
    assert options == Merchandising(0, "price_desc", 0.5, True)
    assert search(sort=pb.SORT_RELEVANCE).merchandising.sort == "relevance"
    assert search(sort=pb.SORT_UNSPECIFIED).merchandising.sort == "relevance"
    assert search(sort=pb.SORT_PRICE_ASC).merchandising.sort == "price_asc"


@pytest.mark.parametrize("boost", [-0.1, 10.5, float("nan"), float("inf")])
def test_in_stock_boost_is_0_to_10(boost):
    assert field_of(lambda: search(in_stock_boost=boost)) == "in_stock_boost"


def test_unknown_sort_is_invalid():
    assert field_of(lambda: search(sort=7)) == "sort"


def test_depth_is_the_candidate_set_only_for_merchandised_pages():
    assert Merchandising(offset=30).depth(10, FETCH.candidate_set) == 40
    for options in (Merchandising(sort="price_asc"), Merchandising(in_stock_boost=0.1), Merchandising(facets=True)):
        assert options.depth(10, FETCH.candidate_set) == FETCH.candidate_set == 200


def hit(pid: str, score: float, price: float | None = None, in_stock: bool = True) -> RankedHit:
    payload = {"product_id": pid, "in_stock": in_stock, **({"price": price} if price is not None else {})}
    return RankedHit(IndexHit(pid, score, payload), 0.0, score, 0.0)


def pids(hits) -> list[str]:
    return [h.hit.payload["product_id"] for h in hits]


RANKED = [hit("a", 0.9, 30.0, False), hit("b", 0.8, None), hit("c", 0.7, 5.0, False), hit("d", 0.6, 30.0),
          hit("e", 0.5, 100.0)]


def test_relevance_pages_slice_the_ranking():
    first, second = (arrange(RANKED, Merchandising(offset=k), 2) for k in (0, 2))
    assert pids(first) + pids(second) == ["a", "b", "c", "d"]
    assert arrange(RANKED, Merchandising(offset=4), 2) == RANKED[4:]
    assert arrange(RANKED, Merchandising(offset=5), 2) == []


def test_price_sorts_put_products_without_a_price_last_and_keep_relevance_on_ties():
    assert pids(arrange(RANKED, Merchandising(sort="price_asc"), 5)) == ["c", "a", "d", "e", "b"]
    assert pids(arrange(RANKED, Merchandising(sort="price_desc"), 5)) == ["e", "a", "d", "c", "b"]
    assert pids(arrange(RANKED, Merchandising(offset=2, sort="price_asc"), 2)) == ["d", "e"]


def test_in_stock_boost_adds_to_the_score_of_in_stock_products():
    page = arrange(RANKED, Merchandising(in_stock_boost=0.25), 5)
    assert pids(page) == ["b", "a", "d", "e", "c"]  # b 1.05, a 0.9, d 0.85, e 0.75, c 0.7
    assert [h.hit.score for h in page] == pytest.approx([1.05, 0.9, 0.85, 0.75, 0.7])
    assert pids(arrange(RANKED, Merchandising(in_stock_boost=0.25, sort="price_asc"), 5)) == ["c", "a", "d", "e", "b"]


def test_next_level_keeps_the_categories_one_level_below_the_prefix():
    counts = [("tools", 5), ("tools > power", 3), ("tools > hand", 2), ("tools > power > drills", 3), ("garden", 1)]
    assert next_level(counts, ()) == [("tools", 5), ("garden", 1)]
    assert next_level(counts, ("tools",)) == [("power", 3), ("hand", 2)]
    assert next_level(counts, ("tools", "power")) == [("drills", 3)]
    assert next_level(counts, ("garden",)) == []


def test_price_bands_are_half_open_and_leave_out_empty_bands_and_missing_prices():
    assert price_bands([5.0, 10.0, 9.99, None, 1000.0, 25_000.0, 0.0]) == [
        PriceBand(0.0, 10.0, 3), PriceBand(10.0, 25.0, 1), PriceBand(1000.0, None, 2)]
    assert price_bands([None]) == []
