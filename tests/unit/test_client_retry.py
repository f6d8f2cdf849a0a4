"""cartwise.client's retries over real gRPC on loopback: a small SearchService that answers UNAVAILABLE a given
number of times before it answers. grpc retries UNAVAILABLE from the channel's service config; every other
status reaches the caller at once."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import grpc
import pytest

from cartwise.client import AsyncClient, Client, retry_options
from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc


class Flaky(pb_grpc.SearchServiceServicer):
    """Answers the first ``failures`` calls with ``code``, then one hit; counts the calls it received."""

    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.failures, self.code, self.calls = failures, code, 0

    async def Search(self, request, context):
        self.calls += 1
        if self.calls <= self.failures:
            await context.abort(self.code, "not now")
        return pb.SearchResponse(hits=[pb.Hit(product_id="p1", title=request.query)], model_version="v9")


@asynccontextmanager
async def serving(servicer: Flaky):
    server = grpc.aio.server()
    pb_grpc.add_SearchServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_unavailable_is_retried_until_an_answer():
    flaky = Flaky(failures=2)
    async with serving(flaky) as target, AsyncClient(target, Settings(), timeout_s=30) as client:
        result = await client.search("drill")
    assert flaky.calls == 3 and result.hits[0].title == "drill" and result.model_version == "v9"


async def test_the_sync_client_retries_too():
    flaky = Flaky(failures=1)
    async with serving(flaky) as target:
        def call():
            with Client(target, Settings(), timeout_s=30) as client:
                return client.search("saw")

        result = await asyncio.to_thread(call)
    assert flaky.calls == 2 and result.hits[0].title == "saw"


async def test_retries_stop_at_max_attempts():
    flaky = Flaky(failures=10)
    async with serving(flaky) as target, AsyncClient(target, Settings(), timeout_s=30, max_attempts=3) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.search("drill")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and flaky.calls == 3


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_other_statuses_are_not_retried(code):
    flaky = Flaky(failures=1, code=code)
    async with serving(flaky) as target, AsyncClient(target, Settings(), timeout_s=30) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.search("drill")
    assert err.value.code() == code and err.value.details() == "not now" and flaky.calls == 1


def test_max_attempts_is_what_grpc_allows():
    with pytest.raises(ValueError, match="2..5"):
        retry_options(6)
