"""``cartwise bench freshness``: time from producing an event to it changing a Search answer.

Probes alternate between a cart event of a new user (visible when that user's Search is personalized)
and a catalog upsert of a new product (visible when a Search for its title returns it), while a
background thread replays REES46 view events at a fixed rate through the same worker."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import grpc

from cartwise.app.bench.common import loaded_service, percentiles_ms, refreshed, send_paced
from cartwise.client import AsyncClient
from cartwise.app.replay import publish
from cartwise.datasets import Record, rees46_records
from cartwise.events import BehaviorEvent, ProductUpsert
from cartwise.kafka_io import make_producer
from cartwise.machine import machine_info
from cartwise.settings import Settings
from streams.event_ages import STAGES, EventAges

POLL_S = 0.02
PROBE_TIMEOUT_S = 5.0
PROBE_WORDS = ("amber", "birch", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper")


def _background(settings: Settings, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Replay REES46 views as fresh events at ``rate`` events/s until ``stop``."""
    views = [r for r in rees46_records() if r.topic_field == "views"]
    fresh = (refreshed(record, f"bg-{n}") for n, record in enumerate(itertools.cycle(views)))
    producer = make_producer(settings)
    try:
        sent[0] = send_paced(producer, settings.topics, [(rate, fresh)], stop.is_set)[0]
    finally:
        producer.close()


def _send(producer, topics, record: Record) -> float:
    """Publish ``record`` and wait for the broker's acknowledgment; returns the seconds that took."""
    started = time.perf_counter()
    publish(producer, topics, record)
    producer.flush()
    return time.perf_counter() - started


def probe(k: int, product_ids: list[str]) -> tuple[Record, str, dict, Callable[[object], bool]]:
    """Probe ``k``: the record to send (even ``k``: a cart event of a new user, on one of ``product_ids``;
    odd: a catalog upsert of a new product), its kind (``cart`` or ``catalog``), the Search request fields
    to poll, and the test that an answer shows it."""
    now = datetime.now(timezone.utc)
    if k % 2 == 0:
        user = f"fresh-user-{k}"
        event = BehaviorEvent(event_id=f"probe-{k}", event_time=now, event_type="cart", user_id=user,
                              product_id=product_ids[k % len(product_ids)])
        return Record("carts", user, event), "cart", {"query": "smartphone", "user_id": user}, \
            lambda r: r.user_interactions > 0
    pid, title = f"fresh-product-{k}", f"{PROBE_WORDS[k % 10]} {PROBE_WORDS[(k // 10) % 10]} probe lantern {k}"
    event = ProductUpsert(event_id=f"probe-{k}", event_time=now, product_id=pid, title=title, price=1.0)
    return Record("catalog", pid, event), "catalog", {"query": title, "limit": 5}, \
        lambda r: any(h.product_id == pid for h in r.hits)


class PollBudget:
    """Probes polling at once share one pace: at most one Search per ``interval_s`` seconds over all of them, so
    probes that wait long (several outstanding) do not multiply the Search load on a slow service."""

    def __init__(self, interval_s: float = POLL_S) -> None:
        self.interval_s, self._next = interval_s, 0.0

    async def wait(self) -> None:
        """Sleep until this caller's turn to poll."""
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval_s
        await asyncio.sleep(slot - now)


async def time_to_visible(client: AsyncClient, producer, topics, record: Record, query: dict,
                          visible: Callable[[object], bool], timeout_s: float = PROBE_TIMEOUT_S,
                          tolerate_errors: bool = False, budget: PollBudget | None = None,
                          acks: list[float] | None = None) -> float | None:
    """Send ``record`` (flushed) and poll Search with ``query`` every :data:`POLL_S` (with ``budget``: when it
    gives this probe a turn) until ``visible`` says an answer shows it: the seconds from before the send to
    that answer, or None when none did within ``timeout_s`` (a missed probe). The seconds the broker took to
    acknowledge the send go to ``acks``. With ``tolerate_errors`` a failed Search counts as not visible yet;
    otherwise its grpc.RpcError is raised."""
    started = time.perf_counter()
    acked = await asyncio.to_thread(_send, producer, topics, record)
    if acks is not None:
        acks.append(acked)
    while True:
        try:
            if visible(await client.search(**query)):
                seconds = time.perf_counter() - started
                return seconds if seconds <= timeout_s else None
        except grpc.RpcError:
            if not tolerate_errors:
                raise
        if time.perf_counter() - started > timeout_s:
            return None
        await (budget.wait() if budget is not None else asyncio.sleep(POLL_S))


async def run_freshness_bench(settings: Settings, events: int, background_rate: float, console) -> dict:
    """Send ``events`` probes one at a time under ``background_rate`` events/s of background load; returns
    p50/p99 freshness (ms) overall and per kind, and how many probes were not seen within PROBE_TIMEOUT_S."""
    product_ids = sorted({r.key for r in rees46_records() if r.topic_field == "catalog"})
    async with loaded_service(settings, console) as service:
        stop, sent = threading.Event(), [0]
        background = threading.Thread(target=_background, daemon=True, args=(
            service.settings, background_rate, stop, sent))
        background.start()
        producer, latencies, missed, acks = make_producer(service.settings), {"cart": [], "catalog": []}, 0, []
        started = time.monotonic()
        async with AsyncClient(f"127.0.0.1:{service.port}") as client:
            await asyncio.sleep(2.0)  # let the background load reach its rate
            service.worker.event_ages.reset()  # the stages of the measured load, not of the catalog's set-up
            with console.status(f"{events} probes under {background_rate:.0f} background events/s"):
                for k in range(events):
                    record, kind, query, visible = probe(k, product_ids)
                    seconds = await time_to_visible(client, producer, service.settings.topics, record, query, visible,
                                                    acks=acks)
                    if seconds is None:
                        missed += 1
                    else:
                        latencies[kind].append(seconds)
        elapsed = time.monotonic() - started
        stop.set()
        background.join()
        producer.close()
        stages = stage_breakdown(service.worker.event_ages, acks)
    seen = latencies["cart"] + latencies["catalog"]
    return {**percentiles_ms(seen), "events": len(seen), "missed": missed,
            **{f"{kind}_{key}": value for kind in latencies for key, value in percentiles_ms(latencies[kind]).items()},
            "stages": stages, "background_events_per_s": sent[0] / elapsed, "poll_interval_ms": POLL_S * 1000,
            "machine": machine_info(), "command": f"cartwise bench freshness --events {events} "
                                                  f"--background-rate {background_rate:g} --json"}


def stage_breakdown(ages: EventAges, acks: list[float]) -> dict:
    """Where freshness goes: the probes' ``produce_ack`` (send to the broker's acknowledgment), then, for every
    event the worker handled in the run (probes and background), its age when its agent's batch started
    (``behavior_batched``, ``catalog_batched``: broker, fetch and batch window) and when its writes were done
    (``*_applied``: what Search reads; the rest of a probe's time is the Search poll). Each is a dict of
    ms figures (streams/event_ages.py)."""
    stages = {"produce_ack": percentiles_ms(acks)}
    for agent in ("behavior", "catalog"):
        for stage in STAGES:
            stages[f"{agent}_{stage}"] = ages.summary(agent, stage)
    return stages
