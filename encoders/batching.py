"""Micro-batching of concurrent query encodes for the async API, behind a query-embedding cache.

Requests that arrive while a batch is being encoded wait for the next one, so under load the encoder
runs full batches on its worker thread while the event loop keeps serving; when idle a lone request
is encoded at once (no added wait). A query seen before under the same model version is answered from
the cache (encoders/query_cache.py) without leaving the event loop."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from encoders.query_cache import QueryCache
from encoders.runtime import ServingModel


class QueryBatcher:
    """Encode queries from many coroutines in shared batches of at most ``max_batch``, caching up to
    ``cache_size`` embeddings (0: no cache). ``observe_encode`` (optional) is called with the seconds each
    encode batch took on its worker thread (the query-encode metric).

    ``await batcher.encode(model, text)`` returns a (D,) float32 unit vector by the model's query tower
    (read-only: it may be shared with other requests). Requests for different models (during a swap) are
    batched separately."""

    def __init__(self, max_batch: int = 32, threads: int = 1, cache_size: int = 0,
                 observe_encode: Callable[[float], None] | None = None) -> None:
        self._max_batch = max_batch
        self._pending: list[tuple[ServingModel, list[int], asyncio.Future]] = []
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
        self._running = 0
        self._threads = threads
        self.cache = QueryCache(cache_size)
        self._observe_encode = observe_encode

    async def encode(self, model: ServingModel, text: str) -> np.ndarray:
        """The unit embedding (D,) float32 of ``text`` by ``model``'s query tower; raises what it raises."""
        ids = model.query_tower.token_ids([text])[0]
        cached = self.cache.get(model.version, ids)
        if cached is not None:
            return cached
        future = asyncio.get_running_loop().create_future()
        self._pending.append((model, ids, future))
        if self._running < self._threads:
            self._launch()
        return await future

    def _launch(self) -> None:
        model = self._pending[0][0]
        batch = [item for item in self._pending if item[0].query_tower is model.query_tower][: self._max_batch]
        taken = {id(item) for item in batch}
        self._pending = [item for item in self._pending if id(item) not in taken]
        self._running += 1
        encode = model.query_tower.encode_ids
        encode = encode if self._observe_encode is None else self._timed(encode)
        task = asyncio.get_running_loop().run_in_executor(self._executor, encode, [ids for _, ids, _ in batch])
        task.add_done_callback(lambda done: self._finish(done, batch))

    def _finish(self, done: asyncio.Future, batch: list) -> None:
        self._running -= 1
        error = done.exception()
        for row, (model, ids, future) in enumerate(batch):
            if error is None:
                self.cache.put(model.version, ids, done.result()[row])
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result()[row])
        if self._pending:
            self._launch()

    def _timed(self, encode):
        def timed(ids):
            started = time.perf_counter()
            try:
                return encode(ids)
            finally:
                self._observe_encode(time.perf_counter() - started)
        return timed

    def close(self) -> None:
        """Stop the worker threads (waits for a running batch)."""
        self._executor.shutdown(wait=True)
