"""When the worker builds a products collection's HNSW graph (streams/indexing.py): after the catalog has
been quiet following upserts, or after many upserts during a long load; one at a time; a collection
dropped meanwhile is skipped; a failed build is logged."""

import asyncio
import time

from cartwise.index.edge_build import IndexBuildError
from streams.indexing import ProductIndexing


class Index:
    """Records optimize calls; ``dropped`` collections raise KeyError as the engine does."""

    def __init__(self, dropped=()):
        self.optimized, self.dropped = [], set(dropped)

    def optimize(self, name):
        if name in self.dropped:
            raise KeyError(name)
        self.optimized.append(name)


class SlowIndex(Index):
    """An :class:`Index` whose builds take 0.3 s (in the build thread)."""

    def optimize(self, name):
        time.sleep(0.3)
        super().optimize(name)


def test_optimizes_once_quiet_or_after_many_upserts():
    index = Index()
    indexing = ProductIndexing(index, quiet_s=3600.0, after_upserts=100)
    indexing.wrote("products_v1", 60)
    asyncio.run(indexing.optimize_due())
    assert index.optimized == [] and not indexing.settled  # neither quiet nor enough yet
    indexing.wrote("products_v1", 40)
    asyncio.run(indexing.optimize_due())
    assert index.optimized == ["products_v1"] and indexing.settled
    indexing.quiet_s = 0.0
    indexing.wrote("products_v1", 1)
    asyncio.run(indexing.optimize_due())
    assert index.optimized == ["products_v1"] * 2 and indexing.settled


def test_a_dropped_collection_is_skipped_and_nothing_is_done_for_an_index_that_optimizes_itself():
    index = Index(dropped={"products_v1"})
    indexing = ProductIndexing(index, quiet_s=0.0, after_upserts=100)
    indexing.wrote("products_v1", 5)
    indexing.wrote("products_v2", 5)
    asyncio.run(indexing.optimize_due())
    assert index.optimized == ["products_v2"] and indexing.settled
    server = ProductIndexing(object(), quiet_s=0.0, after_upserts=1)
    server.wrote("products_v1", 5)
    assert server.settled and not server.enabled


def test_stop_waits_for_the_running_build_and_starts_no_more():
    async def scenario():
        index = SlowIndex()
        indexing = ProductIndexing(index, quiet_s=0.0, after_upserts=1)
        indexing.wrote("products_v1", 1)
        timer = asyncio.create_task(indexing.optimize_due())
        await asyncio.sleep(0.05)
        timer.cancel()  # as faust cancels its timers at stop, while the thread still builds
        await indexing.stop()
        assert index.optimized == ["products_v1"]
        indexing.wrote("products_v1", 1)
        await indexing.optimize_due()
        return index.optimized

    assert asyncio.run(scenario()) == ["products_v1"]


def test_a_failed_build_is_logged_and_the_next_upserts_make_it_due_again(caplog):
    class FailsOnce(Index):
        failed = False

        def optimize(self, name):
            if name == "products_v1" and not self.failed:
                self.failed = True
                raise IndexBuildError("HNSW build of products_v1 failed (exit 1): boom")
            super().optimize(name)

    index = FailsOnce()
    indexing = ProductIndexing(index, quiet_s=0.0, after_upserts=100)
    indexing.wrote("products_v1", 5)
    indexing.wrote("products_v2", 5)
    asyncio.run(indexing.optimize_due())
    assert index.optimized == ["products_v2"] and indexing.settled
    assert "HNSW build failed" in caplog.text
    indexing.wrote("products_v1", 1)
    asyncio.run(indexing.optimize_due())
    assert index.optimized == ["products_v2", "products_v1"]


def test_a_tick_returns_at_once_and_stop_ends_the_builds_it_started():
    async def scenario():
        index = SlowIndex()
        indexing = ProductIndexing(index, quiet_s=0.0, after_upserts=1)
        indexing.wrote("products_v1", 1)
        indexing.wrote("products_v2", 1)
        started = time.perf_counter()
        await indexing.tick()
        assert time.perf_counter() - started < 0.1  # the timer is not held by the builds
        await asyncio.sleep(0.05)
        await indexing.stop()  # during the first build: it finishes, the second never starts
        await asyncio.sleep(0.5)
        return index.optimized

    assert asyncio.run(scenario()) == ["products_v1"]
