"""``cartwise demo``'s story on a small slice of the real data (300 Home Depot products, the first 3,000 REES46
rows), through the real embedded service: both acts are told, and no log noise reaches the console."""

from __future__ import annotations

import io
import logging
import re
import shutil

import pytest
from rich.console import Console

from cartwise.app.demo import run_demo
from cartwise.datasets import data_root
from cartwise.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_the_demo_tells_both_acts_without_log_noise(tmp_path, registry_dir, caplog):
    if not (data_root() / "homedepot" / "judgments.csv").is_file():
        pytest.skip(f"{data_root()} holds no Home Depot data")
    shutil.copytree(registry_dir, tmp_path / "models")
    out = io.StringIO()
    caplog.set_level(logging.WARNING)
    await run_demo(Settings(data_dir=tmp_path, encoder_precision="fp32"), Console(file=out, width=160),
                   homedepot_products=300, carts_tried=2, rees46_rows=3_000)
    told = " ".join(out.getvalue().split())  # rich wraps long lines
    assert "Home Depot:" in told and "nDCG@10" in told
    assert all(f"│ {name} │" in told for name in ("BM25", "semantic", "hybrid"))
    assert "BM25 nDCG@10" in told and "-> hybrid" in told  # a query shown side by side
    assert "changed the answer" in told and re.search(r"event to answer over the \d+ carts? sent: median \d+ ms", told)
    assert "producer buffer full" not in caplog.text  # the worker's batches fit faust's changelog buffer
