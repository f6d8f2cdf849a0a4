"""Open-loop gRPC Search load from its own process:
``python -m cartwise.app.bench.loadgen TARGET QPS SECONDS FILE [RECORDS]``.

Requests start on a fixed schedule (request i at i / QPS) whether or not earlier ones have finished,
so a slow server shows up as latency rather than as a lower offered rate. SIGTERM stops the schedule
early (in-flight requests finish). Prints one JSON object; with RECORDS, also writes one JSON line per
request: start (Unix s), latency_ms, model_version, index_version, error (status name or null)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import grpc

from cartwise.app.bench.common import latency_histogram, summarize_ms
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc


async def run(target: str, qps: float, seconds: float, queries: list[dict], records_path: str | None = None) -> dict:
    """Offer ``qps`` Search requests/s for ``seconds`` (or until SIGTERM); returns latency (ms), errors
    and achieved QPS."""
    histogram, errors, records = latency_histogram(), [], []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        await stub.Search(pb.SearchRequest(**queries[0]), timeout=30)  # connect and warm up

        async def one(request: pb.SearchRequest) -> None:
            wall, started = time.time(), time.perf_counter()
            try:
                response = await stub.Search(request, timeout=5)
            except grpc.aio.AioRpcError as err:
                errors.append(err.code().name)
                records.append((wall, None, None, None, err.code().name))
                return
            micros = max(1, int((time.perf_counter() - started) * 1e6))
            histogram.record_value(micros)
            records.append((wall, micros / 1000, response.model_version, response.index_version, None))

        total, tasks, start = int(qps * seconds), [], time.perf_counter()
        for i in range(total):
            delay = start + i / qps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop.is_set():
                break
            tasks.append(asyncio.create_task(one(pb.SearchRequest(**queries[i % len(queries)]))))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    if records_path:
        with open(records_path, "w") as fh:
            for wall, latency, model, index, error in records:
                fh.write(json.dumps({"start": wall, "latency_ms": latency, "model_version": model,
                                     "index_version": index, "error": error}) + "\n")
    return {"requests": len(tasks), "errors": len(errors), "qps": (len(tasks) - len(errors)) / elapsed,
            **summarize_ms(histogram)}


if __name__ == "__main__":
    target_arg, qps_arg, seconds_arg, path = sys.argv[1:5]
    with open(path) as fh:
        print(json.dumps(asyncio.run(run(target_arg, float(qps_arg), float(seconds_arg), json.load(fh),
                                         sys.argv[5] if len(sys.argv) > 5 else None))))
