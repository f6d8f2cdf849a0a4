"""Bulk embedding for the catalog agent and a swap's backfill: one batch split over several threads.

Why: ONNX Runtime releases the GIL while it runs, and its sessions take concurrent calls, so two threads
each running one-thread sessions on half a batch use both cores; one session with two intra-op threads
gains less on MiniLM's small matrices (Home Depot titles, int8 copy, 2 cores: 393 products/s on one
thread, 596/s with two intra-op threads, 675/s split over two threads; issue #13)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import numpy as np

from encoders.runtime import OnnxEncoder

T = TypeVar("T")


class BulkEncoder:
    """Embeds large batches on ``threads`` threads, off the event loop. ``close()`` waits for running work."""

    def __init__(self, threads: int = 2, name: str = "bulk-encode") -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def encode(self, encoder: OnnxEncoder, texts: Sequence[str]) -> np.ndarray:
        """``encoder``'s (B, D) float32 unit rows of ``texts``, in order; every thread takes every
        ``threads``-th text, so each part holds short and long texts alike. Raises what the encoder raises."""
        texts = list(texts)
        parts = [texts[k::self.threads] for k in range(self.threads)]
        done = await asyncio.gather(*(self.run(encoder.encode, part) for part in parts if part))
        out = np.empty((len(texts), encoder.dims), dtype=np.float32)
        for k, rows in enumerate(done):
            out[k::self.threads] = rows
        return out

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on one of the threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        """Stop the threads after the work already given to them."""
        self._pool.shutdown(wait=True)
