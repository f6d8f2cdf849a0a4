"""QueryBatcher: micro-batched concurrent encodes behind the query-embedding cache."""

import asyncio
import threading
import time

import numpy as np
import pytest

from encoders.batching import QueryBatcher
from encoders.runtime import ServingModel


class FakeEncoder:
    """Text "t<k>" (any case, any spacing) tokenizes to [k] and embeds to [k, k, k]; sleeps a little so
    concurrent requests pile up. ``batches`` records the texts of each batch run, as "t<k>"."""

    def __init__(self, delay: float = 0.02, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [[int(t.strip().lower()[1:])] for t in texts]

    def encode_ids(self, encodings: list[list[int]]) -> np.ndarray:
        with self._lock:
            self.batches.append([f"t{ids[0]}" for ids in encodings])
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("encoder broke")
        return np.array([[float(ids[0])] * 3 for ids in encodings], dtype=np.float32)


def model(encoder: FakeEncoder, version: str = "v1") -> ServingModel:
    return ServingModel(version, int(version[1:]), encoder)


@pytest.fixture
def batcher():
    b = QueryBatcher(max_batch=8, threads=1)
    yield b
    b.close()


@pytest.fixture
def cached():
    b = QueryBatcher(max_batch=8, threads=1, cache_size=4)
    yield b
    b.close()


async def test_concurrent_encodes_get_their_own_rows(batcher):
    enc = FakeEncoder()
    results = await asyncio.gather(*(batcher.encode(model(enc), f"t{k}") for k in range(20)))
    for k, row in enumerate(results):
        np.testing.assert_array_equal(row, [k, k, k])
    assert sum(len(b) for b in enc.batches) == 20
    assert sorted(t for b in enc.batches for t in b) == sorted(f"t{k}" for k in range(20))
    assert len(enc.batches) < 20
    assert max(len(b) for b in enc.batches) <= 8


async def test_lone_request_is_encoded_at_once(batcher):
    enc = FakeEncoder(delay=0.0)
    row = await batcher.encode(model(enc), "t5")
    np.testing.assert_array_equal(row, [5, 5, 5])
    assert enc.batches == [["t5"]]


async def test_error_propagates_to_every_waiter(batcher):
    enc = FakeEncoder(fail=True)
    results = await asyncio.gather(*(batcher.encode(model(enc), f"t{k}") for k in range(10)),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "encoder broke" for r in results)
    assert len(enc.batches) < 10


async def test_batcher_recovers_after_error(batcher):
    with pytest.raises(RuntimeError):
        await batcher.encode(model(FakeEncoder(fail=True)), "t1")
    np.testing.assert_array_equal(await batcher.encode(model(FakeEncoder()), "t2"), [2, 2, 2])


async def test_different_encoders_are_batched_separately(batcher):
    a, b = FakeEncoder(), FakeEncoder()
    ma, mb = model(a, "v1"), model(b, "v2")
    jobs = [batcher.encode(ma if k % 2 else mb, f"t{k}") for k in range(12)]
    results = await asyncio.gather(*jobs)
    for k, row in enumerate(results):
        np.testing.assert_array_equal(row, [k, k, k])
    assert all(int(t[1:]) % 2 == 1 for batch in a.batches for t in batch)
    assert all(int(t[1:]) % 2 == 0 for batch in b.batches for t in batch)


async def test_without_a_cache_every_request_is_encoded(batcher):
    enc = FakeEncoder(delay=0.0)
    for _ in range(3):
        await batcher.encode(model(enc), "t7")
    assert enc.batches == [["t7"]] * 3 and batcher.cache.hits == 0


async def test_a_repeated_query_is_served_from_the_cache(cached):
    enc = FakeEncoder(delay=0.0)
    first = await cached.encode(model(enc), "t7")
    again = await cached.encode(model(enc), " T7 ")  # same token ids: same entry
    np.testing.assert_array_equal(again, first)
    assert enc.batches == [["t7"]] and (cached.cache.hits, cached.cache.misses) == (1, 1)
    with pytest.raises(ValueError):
        again[0] = 1.0  # shared between requests: read-only


async def test_the_cache_is_keyed_by_model_version(cached):
    enc = FakeEncoder(delay=0.0)
    await cached.encode(model(enc, "v1"), "t3")
    await cached.encode(model(enc, "v2"), "t3")
    assert enc.batches == [["t3"], ["t3"]]


async def test_the_cache_keeps_the_most_recently_used(cached):
    enc = FakeEncoder(delay=0.0)
    for k in (1, 2, 3, 4, 1, 5):  # 5 evicts the least recently used, 2
        await cached.encode(model(enc), f"t{k}")
    enc.batches.clear()
    for k in (1, 2):
        await cached.encode(model(enc), f"t{k}")
    assert enc.batches == [["t2"]]


async def test_errors_are_not_cached(cached):
    with pytest.raises(RuntimeError):
        await cached.encode(model(FakeEncoder(fail=True)), "t1")
    assert len(cached.cache) == 0


async def test_a_version_with_a_query_tower_embeds_queries_with_it(batcher):
    products, queries = FakeEncoder(), FakeEncoder()
    served = ServingModel("v2", 2, products, query_encoder=queries)
    np.testing.assert_array_equal(await batcher.encode(served, "t5"), [5, 5, 5])
    assert queries.batches == [["t5"]] and products.batches == []
