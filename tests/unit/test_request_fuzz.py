"""Property-based fuzzing of every request field (hypothesis): validation either accepts a request or
raises InvalidRequest naming one of the request's fields (the API's INVALID_ARGUMENT), never anything
else; and undecodable request bytes never make the deserializer raise (the API's INVALID_ARGUMENT)."""

import asyncio
import math

import grpc

from hypothesis import given, settings
from hypothesis import strategies as st

from cartwise.v1 import search_pb2 as pb
from grpc_api.server import DecodeErrorsAreInvalidArgument
from grpc_api.validation import InvalidRequest, SearchQuery, validate_recommend, validate_search

FIELDS = {"query", "user_id", "limit", "filter.category_prefix", "filter.brands", "filter.price.min",
          "filter.price.max", "filter.price", "filter.stock", "personalization_weight", "retrieval",
          "lexical_weight", "request"}
INT32 = st.integers(-2**31, 2**31 - 1)
DOUBLES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, -0.0, 10.0, 1e308])
TEXT = st.text(max_size=600) | st.sampled_from(["", " ", "\x00", "a" * 513, "é" * 200, "\U0001F600"])


@st.composite
def filters(draw) -> pb.Filter:
    flt = pb.Filter(category_prefix=draw(st.lists(TEXT, max_size=20)), brands=draw(st.lists(TEXT, max_size=120)),
                    stock=draw(st.integers(-3, 5)))
    if draw(st.booleans()):
        flt.price.min = draw(DOUBLES)
    if draw(st.booleans()):
        flt.price.max = draw(DOUBLES)
    return flt


@st.composite
def search_requests(draw) -> pb.SearchRequest:
    request = pb.SearchRequest(query=draw(TEXT), user_id=draw(TEXT), filter=draw(filters()),
                               exclude_purchased=draw(st.booleans()), retrieval=draw(st.integers(-2, 6)))
    for name, values in (("limit", INT32), ("personalization_weight", DOUBLES), ("lexical_weight", DOUBLES)):
        if draw(st.booleans()):
            setattr(request, name, draw(values))
    return request


def _checked(validate) -> SearchQuery | None:
    try:
        return validate()
    except InvalidRequest as err:
        assert err.field in FIELDS, err
        return None


@settings(max_examples=400, deadline=None)
@given(search_requests())
def test_search_validation_accepts_or_names_a_field(request):
    query = _checked(lambda: validate_search(request, 512))
    if query is not None:
        assert 1 <= query.limit <= 1000 and len(query.query) <= 512 and (query.query or query.user_id)
        for weight in (query.personalization_weight, query.lexical_weight):
            assert weight is None or math.isfinite(weight)


@settings(max_examples=200, deadline=None)
@given(st.builds(pb.RecommendRequest, user_id=TEXT, filter=filters(), exclude_purchased=st.booleans()))
def test_recommend_validation_accepts_or_names_a_field(request):
    query = _checked(lambda: validate_recommend(request))
    assert query is None or query.user_id


class _Details:
    method = "/cartwise.v1.SearchService/Search"


async def _continuation(details):
    return grpc.unary_unary_rpc_method_handler(lambda request, context: None,
                                               request_deserializer=pb.SearchRequest.FromString)


HANDLER = asyncio.run(DecodeErrorsAreInvalidArgument().intercept_service(_continuation, _Details()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.sampled_from([b"\xff\xff\xff\xff", b"\x0a\x02\xc3\x28"]))
def test_undecodable_bytes_never_raise_in_the_deserializer(data):
    decoded = HANDLER.request_deserializer(data)
    assert isinstance(decoded, pb.SearchRequest) or type(decoded).__name__ == "_Undecodable"
