"""Where the stream worker's index calls run, so that none blocks its event loop on a network round trip.

Over a Qdrant server every index call is a round trip (about a millisecond on a LAN, more under load),
and the worker's calls are synchronous (qdrant-client's blocking client, shared with the trainer and
tools): made on the event loop, each would stall faust's agents, timers and producer callbacks for its
duration. There they run on one thread of the worker's own, one at a time in the order they were made,
so the worker's write-through caches (streams/user_points.py, streams/popularity.py) see the same order
of reads and writes as inline calls would, and never two at once.

Qdrant Edge is in-process and its binding holds the GIL while it reads or writes (docs/benchmarks.md,
"The HNSW build moved out of the serving process"), so a thread would stall the loop just the same and
add a hop: there the calls run inline, and one loop turn follows each, so that chunked writes
(streams/catalog.py) still let the loop run between chunks."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable, TypeVar

T = TypeVar("T")


class IndexCalls:
    """``await calls.run(fn, *args)`` runs ``fn(*args)``, a function of blocking index calls, on the index
    thread when ``remote`` (a Qdrant server: cartwise.index.VectorIndex.remote), else inline followed by one
    loop turn (module doc), and returns its result or raises its error. ``close()`` waits for the
    thread's last call."""

    def __init__(self, remote: bool) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cartwise-index") if remote else None

    async def run(self, fn: Callable[..., T], *args) -> T:
        if self._pool is None:
            result = fn(*args)
            await asyncio.sleep(0)
            return result
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
