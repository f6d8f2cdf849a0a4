"""Micro-batching of concurrent query encodes for the async API.

Requests that arrive while a batch is being encoded wait for the next one, so under load the encoder
runs full batches on its worker thread while the event loop keeps serving; when idle a lone request
is encoded at once (no added wait)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from encoders.runtime import OnnxEncoder


class QueryBatcher:
    """Encode queries from many coroutines in shared batches of at most ``max_batch``.

    ``await batcher.encode(encoder, text)`` returns a (D,) float32 unit vector. Requests for
    different encoders (during a swap) are batched separately."""

    def __init__(self, max_batch: int = 32, threads: int = 1) -> None:
        self._max_batch = max_batch
        self._pending: list[tuple[OnnxEncoder, str, asyncio.Future]] = []
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
        self._running = 0
        self._threads = threads

    async def encode(self, encoder: OnnxEncoder, text: str) -> np.ndarray:
        """The unit embedding (D,) float32 of ``text``; raises what the encoder raises."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((encoder, text, future))
        if self._running < self._threads:
            self._launch()
        return await future

    def _launch(self) -> None:
        encoder = self._pending[0][0]
        batch = [item for item in self._pending if item[0] is encoder][: self._max_batch]
        taken = {id(item) for item in batch}
        self._pending = [item for item in self._pending if id(item) not in taken]
        self._running += 1
        task = asyncio.get_running_loop().run_in_executor(self._executor, encoder.encode, [t for _, t, _ in batch])
        task.add_done_callback(lambda done: self._finish(done, batch))

    def _finish(self, done: asyncio.Future, batch: list) -> None:
        self._running -= 1
        error = done.exception()
        for row, (_, _, future) in enumerate(batch):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result()[row])
        if self._pending:
            self._launch()

    def close(self) -> None:
        """Stop the worker threads (waits for a running batch)."""
        self._executor.shutdown(wait=True)
