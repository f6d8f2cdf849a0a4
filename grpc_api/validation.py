"""Request validation: wire messages -> checked domain requests, or InvalidRequest naming the field."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cartwise.index import SearchFilter
from cartwise.merchandising import MAX_BOOST, Merchandising, Sort
from cartwise.ranking import FETCH
from cartwise.retrieval import Retrieval
from cartwise.v1 import search_pb2 as pb

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
MAX_ID_CHARS = 128
MAX_BRANDS = 100
MAX_CATEGORY_DEPTH = 16
MAX_WEIGHT = 10.0
WIRE_OF_RETRIEVAL: dict[Retrieval, int] = {"hybrid": pb.RETRIEVAL_HYBRID, "dense": pb.RETRIEVAL_DENSE,
                                           "lexical": pb.RETRIEVAL_LEXICAL}
RETRIEVAL_OF_WIRE: dict[int, Retrieval] = {pb.RETRIEVAL_UNSPECIFIED: "hybrid",
                                           **{wire: name for name, wire in WIRE_OF_RETRIEVAL.items()}}
SORT_OF_WIRE: dict[int, Sort] = {pb.SORT_UNSPECIFIED: "relevance", pb.SORT_RELEVANCE: "relevance",
                                 pb.SORT_PRICE_ASC: "price_asc", pb.SORT_PRICE_DESC: "price_desc"}
MAX_DEPTH = FETCH.most  # offset + limit: the deepest ranking the engine is asked for


class InvalidRequest(ValueError):
    """A request field is invalid; the API answers INVALID_ARGUMENT with ``field: message``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated Search or Recommend request. ``query`` may be empty when ``user_id`` is set;
    ``lexical_weight`` None means the service's default."""

    query: str
    user_id: str
    limit: int
    filter: SearchFilter
    exclude_purchased: bool
    personalization_weight: float | None
    retrieval: Retrieval = "dense"
    lexical_weight: float | None = None
    collapse: bool = True  # one product per identical text (cartwise/diversity.py)
    merchandising: Merchandising = Merchandising()  # offset, sort, in-stock boost, facets


@dataclass(frozen=True, slots=True)
class SimilarQuery:
    """A validated SimilarProducts request; ``user_id`` may be empty (no tilt), ``personalization_weight``
    None means α(n) of the user's history."""

    product_id: str
    user_id: str
    limit: int
    filter: SearchFilter
    personalization_weight: float | None
    collapse: bool = True
    merchandising: Merchandising = Merchandising()  # offset, sort, in-stock boost, facets


def _limit(request) -> int:
    if not request.HasField("limit"):
        return DEFAULT_LIMIT
    if not 1 <= request.limit <= MAX_LIMIT:
        raise InvalidRequest("limit", f"must be in 1..{MAX_LIMIT}, got {request.limit}")
    return request.limit


def _offset(request, limit: int) -> int:
    if not 0 <= request.offset <= MAX_DEPTH - limit:
        raise InvalidRequest("offset", f"must be >= 0 with offset + limit <= {MAX_DEPTH}, got {request.offset} "
                                       f"(limit {limit})")
    return request.offset


def _merchandising(request: pb.SearchRequest, limit: int) -> Merchandising:
    """Paging, sort, in-stock boost and facets of a SearchRequest (cartwise/merchandising.py)."""
    if request.sort not in SORT_OF_WIRE:
        raise InvalidRequest("sort", f"unknown value {request.sort}")
    boost = _optional_weight(request, "in_stock_boost", MAX_BOOST)
    return Merchandising(_offset(request, limit), SORT_OF_WIRE[request.sort], boost or 0.0, request.facets)


def _price_bound(price: pb.PriceRange, name: str) -> float | None:
    if not price.HasField(name):
        return None
    value = getattr(price, name)
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"filter.price.{name}", f"must be a finite number >= 0, got {value}")
    return value


def validate_filter(flt: pb.Filter) -> SearchFilter:
    """Check a wire filter. Raises InvalidRequest for empty or oversized category levels or brands,
    a price range with min > max, or an unknown stock value."""
    if len(flt.category_prefix) > MAX_CATEGORY_DEPTH or any(not c.strip() for c in flt.category_prefix):
        raise InvalidRequest("filter.category_prefix", f"needs 1..{MAX_CATEGORY_DEPTH} non-empty levels")
    if len(flt.brands) > MAX_BRANDS or any(not b.strip() for b in flt.brands):
        raise InvalidRequest("filter.brands", f"needs at most {MAX_BRANDS} non-empty brands")
    low, high = _price_bound(flt.price, "min"), _price_bound(flt.price, "max")
    if low is not None and high is not None and low > high:
        raise InvalidRequest("filter.price", f"min {low} > max {high}")
    if flt.stock not in pb.StockFilter.values():
        raise InvalidRequest("filter.stock", f"unknown value {flt.stock}")
    in_stock = {pb.STOCK_FILTER_IN_STOCK: True, pb.STOCK_FILTER_OUT_OF_STOCK: False}.get(flt.stock)
    return SearchFilter(category_prefix=tuple(c.strip() for c in flt.category_prefix),
                        brands=tuple(b.strip() for b in flt.brands), price_min=low, price_max=high, in_stock=in_stock)


def _optional_weight(request, field: str, high: float) -> float | None:
    if not request.HasField(field):
        return None
    value = getattr(request, field)
    if not (math.isfinite(value) and 0.0 <= value <= high):
        raise InvalidRequest(field, f"must be in 0..{high:g}, got {value}")
    return value


def _retrieval(request: pb.SearchRequest) -> Retrieval:
    if request.retrieval not in RETRIEVAL_OF_WIRE:
        raise InvalidRequest("retrieval", f"unknown value {request.retrieval}")
    return RETRIEVAL_OF_WIRE[request.retrieval]


def _user_id(user_id: str) -> str:
    if len(user_id) > MAX_ID_CHARS:
        raise InvalidRequest("user_id", f"longer than {MAX_ID_CHARS} characters")
    return user_id.strip()


def validate_search(request: pb.SearchRequest, max_query_chars: int) -> SearchQuery:
    """Check a SearchRequest: a query or a user is required; see the proto for each field's range."""
    if len(request.query) > max_query_chars:
        raise InvalidRequest("query", f"longer than {max_query_chars} characters ({len(request.query)})")
    query, user_id = request.query.strip(), _user_id(request.user_id)
    if not query and not user_id:
        raise InvalidRequest("query", "a query or a user_id is required")
    limit = _limit(request)
    return SearchQuery(query, user_id, limit, validate_filter(request.filter), request.exclude_purchased,
                       _optional_weight(request, "personalization_weight", MAX_WEIGHT), _retrieval(request),
                       _optional_weight(request, "lexical_weight", 1.0), not request.keep_duplicates,
                       _merchandising(request, limit))


def validate_recommend(request: pb.RecommendRequest) -> SearchQuery:
    """Check a RecommendRequest: ``user_id`` is required."""
    user_id = _user_id(request.user_id)
    if not user_id:
        raise InvalidRequest("user_id", "is required")
    limit = _limit(request)
    return SearchQuery("", user_id, limit, validate_filter(request.filter), request.exclude_purchased, None,
                       collapse=not request.keep_duplicates,
                       merchandising=Merchandising(_offset(request, limit)))


def validate_similar(request: pb.SimilarProductsRequest) -> SimilarQuery:
    """Check a SimilarProductsRequest: ``product_id`` is required (at most 128 characters)."""
    product_id = request.product_id.strip()
    if not product_id:
        raise InvalidRequest("product_id", "is required")
    if len(product_id) > MAX_ID_CHARS:
        raise InvalidRequest("product_id", f"longer than {MAX_ID_CHARS} characters")
    limit = _limit(request)
    return SimilarQuery(product_id, _user_id(request.user_id), limit, validate_filter(request.filter),
                        _optional_weight(request, "personalization_weight", MAX_WEIGHT), not request.keep_duplicates,
                        Merchandising(_offset(request, limit)))
