"""Personalization fusion math and gRPC request validation."""

import math

import numpy as np
import pytest

from cartwise.index import SearchFilter
from cartwise.personalization import fused_query, personalization_weight
from cartwise.settings import Personalization
from cartwise.v1 import search_pb2 as pb
from grpc_api.validation import (
    DEFAULT_LIMIT,
    InvalidRequest,
    validate_recommend,
    validate_search,
    validate_similar,
)

PARAMS = Personalization(alpha_max=0.8, n0=4.0)


def test_alpha_zero_for_cold_user():
    assert personalization_weight(0, PARAMS) == 0.0


def test_alpha_half_at_n0():
    assert personalization_weight(4, PARAMS) == pytest.approx(0.4)


def test_alpha_increases_towards_alpha_max():
    values = [personalization_weight(n, PARAMS) for n in (1, 2, 10, 100, 10_000)]
    assert values == sorted(values)
    assert all(v < PARAMS.alpha_max for v in values)
    assert values[-1] == pytest.approx(PARAMS.alpha_max, rel=1e-3)


def test_fused_query():
    q = np.array([1.0, 0.0], dtype=np.float32)
    u = np.array([0.0, 1.0], dtype=np.float32)
    fused = fused_query(q, u, 0.5)
    np.testing.assert_allclose(fused, [1.0, 0.5])
    assert fused.dtype == np.float32
    assert fused_query(None, u, 0.5) is u
    assert fused_query(q, None, 0.5) is q
    np.testing.assert_array_equal(fused_query(q, u, 0.0), q)
    with pytest.raises(ValueError):
        fused_query(None, None, 0.5)


def test_fused_score_is_semantic_plus_alpha_personal():
    rng = np.random.default_rng(0)
    q, u, p = (v / np.linalg.norm(v) for v in rng.normal(size=(3, 16)).astype(np.float32))
    alpha = 0.3
    assert float(fused_query(q, u, alpha) @ p) == pytest.approx(float(q @ p + alpha * (u @ p)), abs=1e-6)


def search(**kw) -> pb.SearchRequest:
    return pb.SearchRequest(**kw)


def field_of(call) -> str:
    with pytest.raises(InvalidRequest) as err:
        call()
    assert str(err.value).startswith(err.value.field + ":")
    return err.value.field


def test_query_or_user_required():
    assert field_of(lambda: validate_search(search(), 512)) == "query"
    assert field_of(lambda: validate_search(search(query="   ", user_id="  "), 512)) == "query"


def test_user_alone_is_enough():
    q = validate_search(search(user_id=" u1 "), 512)
    assert (q.query, q.user_id) == ("", "u1")


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_limit_out_of_range(limit):
    assert field_of(lambda: validate_search(search(query="x", limit=limit), 512)) == "limit"
    assert field_of(lambda: validate_recommend(pb.RecommendRequest(user_id="u", limit=limit))) == "limit"


def test_limit_default_and_bounds():
    assert validate_search(search(query="x"), 512).limit == DEFAULT_LIMIT == 10
    assert validate_search(search(query="x", limit=1), 512).limit == 1
    assert validate_search(search(query="x", limit=1000), 512).limit == 1000
    assert validate_recommend(pb.RecommendRequest(user_id="u")).limit == 10


def test_oversized_query():
    assert validate_search(search(query="a" * 20), 20).query == "a" * 20
    assert field_of(lambda: validate_search(search(query="a" * 21), 20)) == "query"


def test_oversized_user_id():
    assert field_of(lambda: validate_search(search(query="x", user_id="u" * 129), 512)) == "user_id"


def with_filter(flt: pb.Filter) -> pb.SearchRequest:
    return search(query="shoes", filter=flt)


def test_price_min_above_max():
    flt = pb.Filter(price=pb.PriceRange(min=10, max=5))
    assert field_of(lambda: validate_search(with_filter(flt), 512)) == "filter.price"


@pytest.mark.parametrize("bound", ["min", "max"])
@pytest.mark.parametrize("value", [-1.0, math.inf, math.nan])
def test_bad_price_bound(bound, value):
    flt = pb.Filter(price=pb.PriceRange(**{bound: value}))
    assert field_of(lambda: validate_search(with_filter(flt), 512)) == f"filter.price.{bound}"


def test_price_zero_and_equal_bounds_ok():
    got = validate_search(with_filter(pb.Filter(price=pb.PriceRange(min=0, max=0))), 512).filter
    assert (got.price_min, got.price_max) == (0.0, 0.0)
    got = validate_search(with_filter(pb.Filter(price=pb.PriceRange(max=5))), 512).filter
    assert (got.price_min, got.price_max) == (None, 5.0)


def test_unknown_stock_value():
    assert field_of(lambda: validate_search(with_filter(pb.Filter(stock=7)), 512)) == "filter.stock"


@pytest.mark.parametrize("brands", [[""], ["ok", "  "], ["b"] * 101])
def test_bad_brands(brands):
    assert field_of(lambda: validate_search(with_filter(pb.Filter(brands=brands)), 512)) == "filter.brands"


@pytest.mark.parametrize("levels", [["a", ""], [" "], ["x"] * 17])
def test_bad_category_prefix(levels):
    flt = pb.Filter(category_prefix=levels)
    assert field_of(lambda: validate_search(with_filter(flt), 512)) == "filter.category_prefix"


@pytest.mark.parametrize("weight", [-0.1, 10.5, 11.0, math.inf, math.nan])
def test_bad_personalization_weight(weight):
    req = search(query="x", personalization_weight=weight)
    assert field_of(lambda: validate_search(req, 512)) == "personalization_weight"


def test_personalization_weight_unset_and_zero():
    assert validate_search(search(query="x"), 512).personalization_weight is None
    assert validate_search(search(query="x", personalization_weight=0.0), 512).personalization_weight == 0.0
    assert validate_search(search(query="x", personalization_weight=10.0), 512).personalization_weight == 10.0


@pytest.mark.parametrize("weight", [-0.01, 1.01, math.inf, math.nan])
def test_bad_lexical_weight(weight):
    req = search(query="x", lexical_weight=weight)
    assert field_of(lambda: validate_search(req, 512)) == "lexical_weight"


def test_unknown_retrieval_names_the_field():
    assert field_of(lambda: validate_search(search(query="x", retrieval=99), 512)) == "retrieval"


@pytest.mark.parametrize("wire,expected", [(pb.RETRIEVAL_UNSPECIFIED, "hybrid"), (pb.RETRIEVAL_HYBRID, "hybrid"),
                                           (pb.RETRIEVAL_DENSE, "dense"), (pb.RETRIEVAL_LEXICAL, "lexical")])
def test_retrieval_defaults_to_hybrid(wire, expected):
    query = validate_search(search(query="x", retrieval=wire, lexical_weight=0.3), 512)
    assert query.retrieval == expected and query.lexical_weight == pytest.approx(0.3)
    assert validate_search(search(query="x"), 512).lexical_weight is None


def test_recommend_requires_user():
    assert field_of(lambda: validate_recommend(pb.RecommendRequest())) == "user_id"
    assert field_of(lambda: validate_recommend(pb.RecommendRequest(user_id="   "))) == "user_id"


def test_good_search_maps_to_filter():
    req = search(query="  running shoes ", user_id="u7", limit=25, exclude_purchased=True, personalization_weight=2.5,
                 filter=pb.Filter(category_prefix=[" shoes ", "running"], brands=[" Nike", "ADIDAS "],
                                  price=pb.PriceRange(min=10, max=99.5), stock=pb.STOCK_FILTER_IN_STOCK))
    q = validate_search(req, 512)
    assert (q.query, q.user_id, q.limit, q.exclude_purchased, q.personalization_weight) == \
        ("running shoes", "u7", 25, True, 2.5)
    assert q.filter == SearchFilter(category_prefix=("shoes", "running"), brands=("Nike", "ADIDAS"),
                                    price_min=10.0, price_max=99.5, in_stock=True)


@pytest.mark.parametrize("stock,expected", [(pb.STOCK_FILTER_UNSPECIFIED, None), (pb.STOCK_FILTER_IN_STOCK, True),
                                            (pb.STOCK_FILTER_OUT_OF_STOCK, False)])
def test_stock_mapping(stock, expected):
    assert validate_search(with_filter(pb.Filter(stock=stock)), 512).filter.in_stock is expected


def test_empty_filter_is_empty():
    assert validate_search(search(query="x"), 512).filter.is_empty()


def test_good_recommend():
    q = validate_recommend(pb.RecommendRequest(user_id=" u1 ", limit=5, exclude_purchased=True,
                                               filter=pb.Filter(stock=pb.STOCK_FILTER_OUT_OF_STOCK)))
    assert (q.query, q.user_id, q.limit, q.exclude_purchased, q.personalization_weight) == ("", "u1", 5, True, None)
    assert q.filter == SearchFilter(in_stock=False)


@pytest.mark.parametrize("product_id", ["", "   ", "p" * 129])
def test_similar_products_needs_a_product_id(product_id):
    assert field_of(lambda: validate_similar(pb.SimilarProductsRequest(product_id=product_id))) == "product_id"


@pytest.mark.parametrize("request_, field", [
    (pb.SimilarProductsRequest(product_id="p", limit=0), "limit"),
    (pb.SimilarProductsRequest(product_id="p", personalization_weight=11), "personalization_weight"),
    (pb.SimilarProductsRequest(product_id="p", filter=pb.Filter(brands=[" "])), "filter.brands"),
    (pb.SimilarProductsRequest(product_id="p", user_id="u" * 129), "user_id"),
])
def test_similar_products_checks_its_fields_like_search(request_, field):
    assert field_of(lambda: validate_similar(request_)) == field


def test_good_similar_products():
    q = validate_similar(pb.SimilarProductsRequest(product_id=" p1 ", user_id=" u ", limit=5,
                                                   filter=pb.Filter(category_prefix=["home"])))
    assert (q.product_id, q.user_id, q.limit, q.personalization_weight) == ("p1", "u", 5, None)
    assert q.filter == SearchFilter(category_prefix=("home",))

