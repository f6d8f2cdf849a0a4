"""Building the HNSW graph of products collections the catalog agent fills (Qdrant Edge).

Qdrant Edge runs its segment optimizers only when asked (cartwise.index.EdgeIndex.optimize): points the
catalog agent upserts stay in an unindexed segment and every Search scans them by brute force. On the
54,667-product Home Depot catalog loaded through the worker, the served hybrid query then took 32 ms of
CPU (issue #13; an HNSW search of 30,000 points takes 1.2 ms against 5.5 ms brute force). A swap's
backfill optimized its own collection; a catalog fed through Kafka never was. The worker now optimizes a
products collection in a background thread once the catalog has been quiet for ``quiet_s`` after upserts,
or after ``after_upserts`` upserts during a long load. The build runs in a child process on a copy of
the shard (``EdgeIndex.optimize``: the binding holds the GIL while it builds, which stopped this whole
process for the build's seconds); searches and writes go on meanwhile against the live shard, and the
optimized copy replaces it in one short pause. A failed build is logged; the next upserts make a build due again (it indexes all unindexed points).
The Qdrant server optimizes in the background by itself."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from cartwise.index import VectorIndex
from cartwise.index.edge_build import IndexBuildError

log = logging.getLogger(__name__)


class ProductIndexing:
    """Counts upserts per products collection since its last optimization and runs the next one when due
    (module doc); ``settled`` says nothing is due or running."""

    def __init__(self, index: VectorIndex, quiet_s: float, after_upserts: int) -> None:
        self.index, self.quiet_s, self.after_upserts = index, quiet_s, after_upserts
        self._pending: Counter[str] = Counter()
        self._last_write = 0.0
        self._running = False
        self._stopped = False
        self._build: asyncio.Future | None = None  # the optimization running in its thread
        self._due: asyncio.Task | None = None  # the optimize_due a tick started

    @property
    def enabled(self) -> bool:
        """Whether the index needs asking (Qdrant Edge) or optimizes by itself (the server)."""
        return hasattr(self.index, "optimize")

    @property
    def settled(self) -> bool:
        """True when no collection waits for an optimization and none runs."""
        return not self.enabled or (not self._running and not any(self._pending.values()))

    def wrote(self, collection: str, upserts: int) -> None:
        """``upserts`` points were written to ``collection`` (a products collection) just now."""
        if self.enabled and upserts:
            self._pending[collection] += upserts
            self._last_write = time.monotonic()

    async def tick(self) -> None:
        """The worker's timer: start :meth:`optimize_due` in a task of its own unless one still runs, and
        return at once. A build takes seconds to minutes, and a timer that awaited it outlasted its interval
        (faust logged "Timer ... is overlapping" through every catalog load)."""
        if self._due is None or self._due.done():
            self._due = asyncio.ensure_future(self.optimize_due())
            self._due.add_done_callback(_log_failure)

    async def optimize_due(self) -> None:
        """Optimize, one at a time in a thread, the collections that are due (module doc)."""
        if not self.enabled or self._running or self._stopped:
            return
        quiet = time.monotonic() - self._last_write >= self.quiet_s
        due = [name for name, n in self._pending.items() if n and (quiet or n >= self.after_upserts)]
        self._running = bool(due)
        try:
            for name in due:
                upserts, self._pending[name] = self._pending[name], 0
                started = time.perf_counter()
                self._build = asyncio.ensure_future(asyncio.to_thread(self.index.optimize, name))
                try:
                    await asyncio.shield(self._build)
                except KeyError:  # the collection was dropped meanwhile (a swap's clean-up)
                    continue
                except IndexBuildError:
                    log.exception("%s: HNSW build failed; the live shard serves on, unindexed", name)
                    continue
                log.info("%s: HNSW built after %d upserts in %.1f s", name, upserts, time.perf_counter() - started)
        finally:
            self._running = False

    async def stop(self) -> None:
        """Start no more optimizations and wait for the running one: its thread must not outlive the index."""
        self._stopped = True
        if self._due is not None:
            self._due.cancel()  # the build itself is shielded: its thread runs on, waited for below
        if self._build is not None:
            await asyncio.wait([self._build])


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("optimizing the products collections failed", exc_info=task.exception())
