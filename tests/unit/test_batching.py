"""QueryBatcher: micro-batched concurrent encodes."""

import asyncio
import threading
import time

import numpy as np
import pytest

from encoders.batching import QueryBatcher


class FakeEncoder:
    """Row for "t<k>" is [k, k, k]; sleeps a little so concurrent requests pile up."""

    def __init__(self, delay: float = 0.02, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.batches.append(list(texts))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("encoder broke")
        return np.array([[float(t[1:])] * 3 for t in texts], dtype=np.float32)


@pytest.fixture
def batcher():
    b = QueryBatcher(max_batch=8, threads=1)
    yield b
    b.close()


async def test_concurrent_encodes_get_their_own_rows(batcher):
    enc = FakeEncoder()
    results = await asyncio.gather(*(batcher.encode(enc, f"t{k}") for k in range(20)))
    for k, row in enumerate(results):
        np.testing.assert_array_equal(row, [k, k, k])
    assert sum(len(b) for b in enc.batches) == 20
    assert sorted(t for b in enc.batches for t in b) == sorted(f"t{k}" for k in range(20))
    assert len(enc.batches) < 20
    assert max(len(b) for b in enc.batches) <= 8


async def test_lone_request_is_encoded_at_once(batcher):
    enc = FakeEncoder(delay=0.0)
    row = await batcher.encode(enc, "t5")
    np.testing.assert_array_equal(row, [5, 5, 5])
    assert enc.batches == [["t5"]]


async def test_error_propagates_to_every_waiter(batcher):
    enc = FakeEncoder(fail=True)
    results = await asyncio.gather(*(batcher.encode(enc, f"t{k}") for k in range(10)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "encoder broke" for r in results)
    assert len(enc.batches) < 10


async def test_batcher_recovers_after_error(batcher):
    with pytest.raises(RuntimeError):
        await batcher.encode(FakeEncoder(fail=True), "t1")
    np.testing.assert_array_equal(await batcher.encode(FakeEncoder(), "t2"), [2, 2, 2])


async def test_different_encoders_are_batched_separately(batcher):
    a, b = FakeEncoder(), FakeEncoder()
    jobs = [batcher.encode(a if k % 2 else b, f"t{k}") for k in range(12)]
    results = await asyncio.gather(*jobs)
    for k, row in enumerate(results):
        np.testing.assert_array_equal(row, [k, k, k])
    assert all(int(t[1:]) % 2 == 1 for batch in a.batches for t in batch)
    assert all(int(t[1:]) % 2 == 0 for batch in b.batches for t in batch)
