"""What the Qdrant Edge HNSW build costs the serving process: in-process vs in a child process.

``python -m cartwise.app.bench.edge_build [--points 30000] [--dims 384] [--modes inline,child,update] [--json]``

A random shard of ``points`` × ``dims`` float32 is optimized from a worker thread (as the stream worker and
a swap's backfill call it) while the main thread runs a 1 ms ticker that searches the shard on every tick,
as the serving loop would. ``inline`` calls the binding's ``EdgeShard.optimize`` in the thread (the old
path); ``child`` calls :meth:`cartwise.index.EdgeIndex.optimize`; ``update`` times one upsert of ``points``
points instead (``EdgeShard.update``). Keys per mode: ``build_s`` (the call's duration), ``ticks``,
``ticks_per_s`` (a free ticker makes close to 1,000), ``max_gap_ms`` (the main thread's longest stall);
for ``child`` also ``copy_ms`` (the copy, during which writers wait) and ``switch_ms`` (the pause in which
readers and writers wait while the optimized copy replaces the live shard)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from cartwise.index import CollectionSchema, EdgeIndex, IndexPoint
from cartwise.index import edge as edge_module
from cartwise.machine import machine_info

NAME = "bench"


def _filled(root: Path, points: int, dims: int) -> tuple[EdgeIndex, np.ndarray]:
    index = EdgeIndex(root, search_threads=1)
    index.create_collection(NAME, dims, CollectionSchema())
    vectors = np.random.default_rng(0).standard_normal((points, dims)).astype(np.float32)
    for start in range(0, points, 1000):
        index.upsert(NAME, [IndexPoint(f"00000000-0000-0000-0000-{i:012d}", vectors[i], {"i": i})
                            for i in range(start, min(points, start + 1000))])
    return index, vectors


def _ticking(build, index: EdgeIndex, vectors: np.ndarray) -> dict:
    """Run ``build`` in a thread; tick (sleep 1 ms, search) on this one until it ends."""
    worker = threading.Thread(target=build)
    started = last = time.perf_counter()
    worker.start()
    ticks, max_gap = 0, 0.0
    while worker.is_alive():
        time.sleep(0.001)
        index.search(NAME, vectors[ticks % len(vectors)], 10)
        now = time.perf_counter()
        ticks, max_gap, last = ticks + 1, max(max_gap, now - last), now
    worker.join()
    seconds = time.perf_counter() - started
    return {"build_s": round(seconds, 2), "ticks": ticks, "ticks_per_s": round(ticks / seconds, 1),
            "max_gap_ms": round(max_gap * 1000, 1)}


def _timed_child(index: EdgeIndex) -> dict:
    """Time the phases of :meth:`EdgeIndex.optimize` by wrapping the two calls that bound them."""
    phases: dict[str, float] = {}
    started = time.perf_counter()
    build_copy, switch = edge_module.build_copy, EdgeIndex._switch

    def timed_build(path):
        phases["copy_ms"] = (time.perf_counter() - started) * 1000
        return build_copy(path)

    def timed_switch(self, *args):
        begun = time.perf_counter()
        switch(self, *args)
        phases["switch_ms"] = (time.perf_counter() - begun) * 1000

    edge_module.build_copy, EdgeIndex._switch = timed_build, timed_switch
    try:
        index.optimize(NAME)
    finally:
        edge_module.build_copy, EdgeIndex._switch = build_copy, switch
    return {key: round(value, 1) for key, value in phases.items()}


def _update(root: Path, points: int, dims: int) -> dict:
    """The ticker during one upsert of ``points`` points (whether ``EdgeShard.update`` releases the GIL)."""
    index, vectors = _filled(root, 1000, dims)
    batch = [IndexPoint(f"00000000-0000-0000-0001-{i:012d}", vectors[i % 1000], {"i": i}) for i in range(points)]
    result = _ticking(lambda: index.upsert(NAME, batch), index, vectors)
    index.close()
    return result


def run(points: int, dims: int, modes: list[str]) -> dict:
    """``modes`` (inline, child, update) on fresh shards; returns the keys of the module doc by mode."""
    result: dict = {"points": points, "dims": dims, "machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        if "inline" in modes:
            index, vectors = _filled(Path(tmp) / "inline", points, dims)
            result["inline"] = _ticking(lambda: index._slot(NAME).shard.optimize(), index, vectors)
            index.close()
        if "child" in modes:
            index, vectors = _filled(Path(tmp) / "child", points, dims)
            phases: dict = {}
            result["child"] = _ticking(lambda: phases.update(_timed_child(index)), index, vectors)
            result["child"].update(phases)
            index.close()
        if "update" in modes:
            result["update"] = _update(Path(tmp) / "update", points, dims)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=30_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--modes", default="inline,child,update", help="comma-separated: inline, child, update")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = run(args.points, args.dims, args.modes.split(","))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
