"""Open-loop gRPC Search load from its own process: ``python -m cartwise.bench.loadgen TARGET QPS SECONDS FILE``.

Requests start on a fixed schedule (request i at i / QPS) whether or not earlier ones have finished,
so a slow server shows up as latency rather than as a lower offered rate. Prints one JSON object."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

from cartwise.bench.common import latency_histogram, summarize_ms
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc


async def run(target: str, qps: float, seconds: float, queries: list[dict]) -> dict:
    """Offer ``qps`` Search requests/s for ``seconds``; returns latency (ms), errors and achieved QPS."""
    histogram, errors = latency_histogram(), []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        await stub.Search(pb.SearchRequest(**queries[0]), timeout=30)  # connect and warm up

        async def one(request: pb.SearchRequest) -> None:
            started = time.perf_counter()
            try:
                await stub.Search(request, timeout=5)
                histogram.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
            except grpc.aio.AioRpcError as err:
                errors.append(err.code().name)

        total, tasks, start = int(qps * seconds), [], time.perf_counter()
        for i in range(total):
            delay = start + i / qps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(pb.SearchRequest(**queries[i % len(queries)]))))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"requests": total, "errors": len(errors), "qps": (total - len(errors)) / elapsed,
            **summarize_ms(histogram)}


if __name__ == "__main__":
    target_arg, qps_arg, seconds_arg, path = sys.argv[1:5]
    with open(path) as fh:
        print(json.dumps(asyncio.run(run(target_arg, float(qps_arg), float(seconds_arg), json.load(fh)))))
