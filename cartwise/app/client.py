"""A small async client of SearchService for the CLI, the demo and the benchmarks."""

from __future__ import annotations

import grpc

from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc


class SearchClient:
    """``async with SearchClient(target) as client: await client.search("drill", user_id="42")``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = pb_grpc.SearchServiceStub(self.channel)

    async def __aenter__(self) -> "SearchClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.channel.close()

    async def search(self, query: str, user_id: str = "", limit: int = 10, timeout_s: float = 5.0,
                     **fields) -> pb.SearchResponse:
        """Call Search; ``fields`` are further SearchRequest fields. Raises grpc.aio.AioRpcError."""
        request = pb.SearchRequest(query=query, user_id=user_id, limit=limit, **fields)
        return await self.stub.Search(request, timeout=timeout_s)
