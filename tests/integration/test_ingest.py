"""issue #13's ingest benchmark at a small scale, on the durable embedded default: behavior events in
REES46 shapes (many users) through the real worker's batched fast path end with the histories and user
vectors a rebuild from the events gives (the slow path), and the figures it reports are computed."""

import asyncio
import shutil

import pytest

from cartwise.app.bench.ingest import behavior_load, run_ingest_bench
from cartwise.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_behavior_load_renames_users_and_events_per_repetition():
    records = behavior_load(events=500, rows=200)
    assert len(records) == 500 and len({r.event.event_id for r in records}) == 500
    repeated = [r for r in records if r.key.endswith("~1")]
    assert repeated and all(r.event.user_id == r.key for r in records)


@pytest.mark.timeout(600)
def test_fast_path_computes_what_the_slow_path_does(registry_dir, tmp_path):
    if not Settings().s3rver.is_file():
        pytest.skip("s3rver is not installed: run `make install`")
    shutil.copytree(registry_dir, tmp_path / "models")
    result = asyncio.run(run_ingest_bench(Settings(data_dir=tmp_path), events=3000, rows=600))
    assert {k: result[k] for k in ("lost", "double_applied", "mismatched_users", "mismatched_products")} == \
        {"lost": 0, "double_applied": 0, "mismatched_users": 0, "mismatched_products": 0}
    assert result["events"] == 3000 and result["broker"] == "disk"
    assert result["events_per_s"] > 0 and result["raw_events_per_s"] > 0 and result["cpu_ms_per_event"] > 0
    assert result["ratio"] == pytest.approx(result["events_per_s"] / result["raw_events_per_s"])
