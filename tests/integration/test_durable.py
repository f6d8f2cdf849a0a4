"""The durable embedded default: `cartwise serve` killed with SIGKILL (its process group, or itself alone)
and started again keeps its events, offsets, index and users, and leaves no child running."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cartwise.app.bench.common import free_port
from cartwise.app.bench.recovery import ServeProcess, run_recovery_bench
from cartwise.app.client import SearchClient
from cartwise.events import BehaviorEvent, ProductUpsert, encode_event
from cartwise.kafka_io import make_producer
from cartwise.settings import Settings

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat fields after the command name (state first, then ppid, pgrp), None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def live_members(group: int) -> list[int]:
    """Pids of processes in process group ``group`` that are not zombies."""
    stats = {int(p.name): _stat(int(p.name)) for p in Path("/proc").glob("[0-9]*")}
    return [pid for pid, fields in stats.items() if fields and fields[0] != "Z" and int(fields[2]) == group]


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def until(check, timeout_s: float = 60.0):
    """Poll the async ``check`` until it returns a truthy value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = await check()
        except Exception:  # the service is still starting
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.2)


async def personal_hit(settings: Settings, product: str, user: str):
    """The hit for ``product`` in a personalized Search, when the product is found and the user's vector
    counts in its score."""
    async with SearchClient(f"127.0.0.1:{settings.grpc_port}") as client:
        response = await client.search("trail running shoe", user_id=user, limit=5)
    hit = next((h for h in response.hits if h.product_id == product), None)
    return hit if hit is not None and hit.personal_score > 0 else None


def send(settings: Settings, topic: str, key: str, event) -> None:
    producer = make_producer(settings)
    producer.send(topic, key=key.encode(), value=encode_event(event))
    producer.flush()
    producer.close()


def gone(pids: list[int], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.timeout(600)
async def test_serve_keeps_everything_across_kill_9(tmp_path, registry_dir):
    if not Settings().s3rver.is_file():
        pytest.skip("s3rver is not installed: run `make install`")
    data_dir = tmp_path / "data"
    shutil.copytree(registry_dir, data_dir / "models")
    settings = Settings(data_dir=data_dir, embedded_kafka_port=free_port(), embedded_storage_port=free_port(),
                        grpc_port=free_port(), app_id=f"durable-{uuid.uuid4().hex[:8]}")
    topics = settings.topics
    serve = ServeProcess(settings, tmp_path / "serve.log")
    serve.start()
    try:
        send(settings, topics.catalog, "dur-shoe", ProductUpsert(
            event_id="dur-shoe-0", event_time=T0, product_id="dur-shoe", title="Trail running shoe with grippy sole",
            brand="Acme", category_path=["sports", "shoes"], price=80.0))
        send(settings, topics.carts, "dur-user", BehaviorEvent(
            event_id="dur-user-cart-1", event_type="cart", user_id="dur-user", product_id="dur-shoe",
            event_time=T0 + timedelta(seconds=1)))
        before = await until(lambda: personal_hit(settings, "dur-shoe", "dur-user"))

        # 1. SIGKILL of the whole process group: nothing of it keeps running
        group = serve.proc.pid
        serve.kill()
        assert gone(live_members(group)), "a child of serve outlived the SIGKILL of its process group"

        # 2. started again: the product and the user's vector are there without a replay; SIGKILL of serve
        #    alone takes its children down too (they die with their parent)
        serve.start()
        after = await until(lambda: personal_hit(settings, "dur-shoe", "dur-user"))
        assert after.personal_score == pytest.approx(before.personal_score, abs=1e-5)
        children = children_of(serve.proc.pid)
        assert len(children) == 2  # the broker and its store
        os.kill(serve.proc.pid, signal.SIGKILL)
        serve.proc.wait(timeout=10)
        assert gone(children), "the broker or its store outlived serve"

        # 3. started again, it still consumes: a new event lands on top of what was kept
        serve.start()
        send(settings, topics.catalog, "dur-boot", ProductUpsert(
            event_id="dur-boot-0", event_time=T0, product_id="dur-boot", title="Trail running shoe, waterproof",
            brand="Acme", category_path=["sports", "shoes"], price=90.0))
        assert await until(lambda: personal_hit(settings, "dur-boot", "dur-user"))
        assert await personal_hit(settings, "dur-shoe", "dur-user")
        assert serve.stop() == 0
    finally:
        serve.kill()


@pytest.mark.timeout(900)  # each restart after a kill waits out the broker's rebalance (about 30 s)
def test_recovery_across_kills_loses_nothing_and_applies_nothing_twice(registry_dir, tmp_path):
    """issue #12's recovery benchmark at a small scale: 1,500 REES46 rows, three SIGKILLs of serve."""
    if not Settings().s3rver.is_file():
        pytest.skip("s3rver is not installed: run `make install`")
    shutil.copytree(registry_dir, tmp_path / "models")
    result = run_recovery_bench(Settings(data_dir=tmp_path), kills=3, limit=1500, seed=1)
    assert result["kills"] == 3 and result["events"] > 1500
    assert {k: result[k] for k in ("lost", "double_applied", "mismatched_users", "mismatched_products")} == \
        {"lost": 0, "double_applied": 0, "mismatched_users": 0, "mismatched_products": 0}
