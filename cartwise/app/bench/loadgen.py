"""gRPC Search load from its own process:
``python -m cartwise.app.bench.loadgen TARGET QPS SECONDS FILE [RECORDS] [--deadline-ms MS] [--clients N]``.

Open loop (the default): request i starts at i / QPS whether or not earlier ones have finished, so a slow
server shows up as latency rather than as a lower offered rate; if this process itself falls behind the
schedule, ``offered_qps`` comes out below QPS and ``start_late_p99_ms`` says by how much starts slipped.
Closed loop (``--clients N``, QPS ignored): N clients each send their next request as soon as the
previous one is answered, so the rate is what the server completes. Every request carries a gRPC deadline
of ``--deadline-ms`` (default 5000). SIGTERM stops the load early (in-flight requests finish).

Prints one JSON object: answers counted by status name (``status``: OK, RESOURCE_EXHAUSTED,
DEADLINE_EXCEEDED, any other code by its name), p50/p99/max of OK answers (``p50_ms``...) and of
RESOURCE_EXHAUSTED ones (``rejected_p50_ms``..., only if any), ``qps`` (OK answers per second), ``offered_qps``
(requests started per second) and this process's CPU per request. With RECORDS, also writes one JSON line
per request: start (Unix s), latency_ms, model_version, index_version, error (status name or null)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import grpc
from hdrh.histogram import HdrHistogram

from cartwise.app.bench.common import latency_histogram, summarize_ms
from cartwise.client import open_channel
from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc

REJECTED = grpc.StatusCode.RESOURCE_EXHAUSTED.name


class Outcomes:
    """Answers counted by gRPC status name, with a µs latency histogram per status; ``records`` keeps one
    tuple per request when asked to."""

    def __init__(self, keep_records: bool = False) -> None:
        self.counts: Counter[str] = Counter()
        self.latency: defaultdict[str, HdrHistogram] = defaultdict(latency_histogram)
        self.records: list[tuple] | None = [] if keep_records else None

    def record(self, status: str, wall_s: float, micros: int, response: pb.SearchResponse | None = None) -> None:
        """One answer: its status name, start (Unix s), latency (µs) and, for OK, the response."""
        self.counts[status] += 1
        self.latency[status].record_value(min(micros, 59_999_999))  # the histogram's ceiling is 60 s
        if self.records is not None and response is not None:
            self.records.append((wall_s, micros / 1000, response.model_version, response.index_version, None))
        elif self.records is not None:
            self.records.append((wall_s, None, None, None, status))

    def summary(self) -> dict:
        """Counts by status, non-OK total, and p50/p99/max (ms) of OK answers and, when there were any, of
        RESOURCE_EXHAUSTED ones."""
        rejected = summarize_ms(self.latency[REJECTED], "rejected_") if self.counts[REJECTED] else {}
        return {"status": dict(self.counts), "errors": sum(n for s, n in self.counts.items() if s != "OK"),
                **summarize_ms(self.latency["OK"]), **rejected}


def _caller(stub: pb_grpc.SearchServiceStub, deadline_s: float, outcomes: Outcomes):
    async def one(request: pb.SearchRequest) -> None:
        wall, started = time.time(), time.perf_counter()
        try:
            response, status = await stub.Search(request, timeout=deadline_s), "OK"
        except grpc.aio.AioRpcError as err:
            response, status = None, err.code().name
        outcomes.record(status, wall, max(1, int((time.perf_counter() - started) * 1e6)), response)
    return one


async def _open_loop(one, requests: list, qps: float, seconds: float, stop: asyncio.Event) -> tuple[int, float, dict]:
    """Start request i at i / ``qps``; returns (requests started, seconds spent starting them, how late
    starts were: p50/p99/max ms)."""
    total, tasks, late = int(qps * seconds), [], latency_histogram()
    start = time.perf_counter()
    for i in range(total):
        due = start + i / qps
        if due > time.perf_counter():
            await asyncio.sleep(due - time.perf_counter())
        if stop.is_set():
            break
        late.record_value(max(1, int((time.perf_counter() - due) * 1e6)))
        tasks.append(asyncio.create_task(one(requests[i % len(requests)])))
    # On schedule the window is len/qps; only a generator that fell behind stretches it.
    window = max(time.perf_counter() - start, len(tasks) / qps)
    await asyncio.gather(*tasks)
    return len(tasks), window, summarize_ms(late, "start_late_")


async def _closed_loop(one, requests: list, clients: int, seconds: float, stop: asyncio.Event) -> tuple[int, float]:
    """``clients`` loops, each sending its next request when the previous one is answered; returns
    (requests sent, seconds)."""
    start, sent = time.perf_counter(), 0

    async def client(k: int) -> None:
        nonlocal sent
        while time.perf_counter() - start < seconds and not stop.is_set():
            await one(requests[(k + sent) % len(requests)])
            sent += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    return sent, time.perf_counter() - start


async def run(target: str, qps: float, seconds: float, queries: list[dict], records_path: str | None = None,
              deadline_s: float = 5.0, clients: int = 0) -> dict:
    """Offer ``qps`` Search requests/s open-loop (or run ``clients`` closed-loop clients) for ``seconds``
    (or until SIGTERM), each with a ``deadline_s`` gRPC deadline; returns the figures of the module
    docstring (latencies in ms, rates per second)."""
    stop, outcomes = asyncio.Event(), Outcomes(keep_records=records_path is not None)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    requests = [pb.SearchRequest(**q) for q in queries]  # built once: this process shares the server's cores
    async with open_channel(Settings(), target) as channel:  # the environment's token and TLS, as the service's
        stub = pb_grpc.SearchServiceStub(channel)
        await stub.Search(requests[0], timeout=30)  # connect and warm up
        one, cpu, start = _caller(stub, deadline_s, outcomes), time.process_time(), time.perf_counter()
        if clients:
            sent, window = await _closed_loop(one, requests, clients, seconds, stop)
            late = {}
        else:
            sent, window, late = await _open_loop(one, requests, qps, seconds, stop)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if records_path:
        _write_records(outcomes.records, records_path)
    return {"requests": sent, "qps": outcomes.counts["OK"] / elapsed, "offered_qps": sent / window,
            **outcomes.summary(), **late, "loadgen_cpu_ms_per_request": 1000 * cpu / max(sent, 1),
            "elapsed_s": elapsed}


async def offer(target: str, queries: Path, seconds: float, qps: float = 0.0, *options: str,
                records: Path | None = None, started: Callable[[asyncio.subprocess.Process], None] | None = None
                ) -> dict:
    """Run this module as its own process against ``target`` (host:port) with the SearchRequest fields in the
    JSON file ``queries``, ``qps`` requests/s for ``seconds`` s (``options``: its flags, e.g. ``--clients``),
    and return what it prints (module docstring). With ``records``, it also writes one JSON line per request
    there. ``started`` is handed the process once spawned (SIGTERM it to end the load early). Raises
    RuntimeError when it fails."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cartwise.app.bench.loadgen", target, str(qps), str(seconds), str(queries),
        *([str(records)] if records else []), *options, stdout=asyncio.subprocess.PIPE)
    if started is not None:
        started(proc)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"the load generator exited with status {proc.returncode}")
    return json.loads(out)


def read_records(path: Path) -> list[dict]:
    """The per-request records a run with RECORDS wrote (module docstring), in request order."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_records(records: list[tuple], path: str) -> None:
    with open(path, "w") as fh:
        for wall, latency, model, index, error in records:
            fh.write(json.dumps({"start": wall, "latency_ms": latency, "model_version": model,
                                 "index_version": index, "error": error}) + "\n")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cartwise.app.bench.loadgen")
    parser.add_argument("target")
    parser.add_argument("qps", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("file", help="JSON list of SearchRequest fields")
    parser.add_argument("records", nargs="?")
    parser.add_argument("--deadline-ms", type=float, default=5000.0)
    parser.add_argument("--clients", type=int, default=0, help="closed loop of N clients instead of QPS")
    return parser.parse_args()


if __name__ == "__main__":
    args = _arguments()
    with open(args.file) as fh:
        print(json.dumps(asyncio.run(run(args.target, args.qps, args.seconds, json.load(fh), args.records,
                                         args.deadline_ms / 1000, args.clients))))
