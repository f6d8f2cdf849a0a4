"""BulkEncoder: a batch split over threads comes back whole and in order."""

import numpy as np
import pytest

from encoders.bulk import BulkEncoder


class RowEncoder:
    """Text "<k>" embeds to [k, k]."""

    dims = 2

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.array([[float(t)] * 2 for t in texts], dtype=np.float32).reshape(len(texts), 2)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 257])
async def test_rows_come_back_in_input_order(count):
    bulk = BulkEncoder(threads=3)
    try:
        rows = await bulk.encode(RowEncoder(), [str(k) for k in range(count)])
    finally:
        bulk.close()
    assert rows.shape == (count, 2)
    np.testing.assert_array_equal(rows[:, 0], np.arange(count, dtype=np.float32))


async def test_errors_reach_the_caller():
    class Broken(RowEncoder):
        def encode(self, texts):
            raise RuntimeError("encoder broke")

    bulk = BulkEncoder(threads=2)
    try:
        with pytest.raises(RuntimeError, match="encoder broke"):
            await bulk.encode(Broken(), ["1", "2", "3"])
    finally:
        bulk.close()
