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

from cartwise.app.bench.common import loaded_service, percentiles_ms
from cartwise.client import AsyncClient
from cartwise.app.replay import publish
from cartwise.datasets import Record, rees46_records
from cartwise.events import BehaviorEvent, ProductUpsert
from cartwise.kafka_io import make_producer
from cartwise.machine import machine_info
from cartwise.settings import Settings

POLL_S = 0.02
PROBE_TIMEOUT_S = 5.0
PROBE_WORDS = ("amber", "birch", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper")


def _background(settings: Settings, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Replay REES46 views as fresh events at ``rate`` events/s until ``stop``."""
    views = [r for r in rees46_records() if r.topic_field == "views"]
    producer, started, topics = make_producer(settings), time.monotonic(), settings.topics
    for n, record in enumerate(itertools.cycle(views)):
        if stop.is_set():
            break
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event = record.event.model_copy(update={"event_id": f"bg-{n}", "event_time": datetime.now(timezone.utc)})
        publish(producer, topics, Record("views", record.key, event))
        sent[0] = n + 1
    producer.flush()
    producer.close()


def _send(producer, topics, record: Record) -> None:
    publish(producer, topics, record)
    producer.flush()


def _probe(k: int, product_ids: list[str]) -> tuple[Record, str, dict, callable]:
    """Probe ``k``: the record to send, its kind, the Search to poll, and the test that it is visible."""
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


async def run_freshness_bench(settings: Settings, events: int, background_rate: float, console) -> dict:
    """Send ``events`` probes one at a time under ``background_rate`` events/s of background load; returns
    p50/p99 freshness (ms) overall and per kind, and how many probes were not seen within PROBE_TIMEOUT_S."""
    product_ids = sorted({r.key for r in rees46_records() if r.topic_field == "catalog"})
    async with loaded_service(settings, console) as service:
        stop, sent = threading.Event(), [0]
        background = threading.Thread(target=_background, daemon=True, args=(
            service.settings, background_rate, stop, sent))
        background.start()
        producer, latencies, missed = make_producer(service.settings), {"cart": [], "catalog": []}, 0
        started = time.monotonic()
        async with AsyncClient(f"127.0.0.1:{service.port}") as client:
            await asyncio.sleep(2.0)  # let the background load reach its rate
            with console.status(f"{events} probes under {background_rate:.0f} background events/s"):
                for k in range(events):
                    record, kind, query, visible = _probe(k, product_ids)
                    t0 = time.perf_counter()
                    await asyncio.to_thread(_send, producer, service.settings.topics, record)
                    while not visible(await client.search(**query)):
                        if time.perf_counter() - t0 > PROBE_TIMEOUT_S:
                            missed += 1
                            break
                        await asyncio.sleep(POLL_S)
                    else:
                        latencies[kind].append(time.perf_counter() - t0)
        elapsed = time.monotonic() - started
        stop.set()
        background.join()
        producer.close()
    seen = latencies["cart"] + latencies["catalog"]
    return {**percentiles_ms(seen), "events": len(seen), "missed": missed,
            **{f"{kind}_{key}": value for kind in latencies for key, value in percentiles_ms(latencies[kind]).items()},
            "background_events_per_s": sent[0] / elapsed, "poll_interval_ms": POLL_S * 1000,
            "machine": machine_info(), "command": f"cartwise bench freshness --events {events} "
                                                  f"--background-rate {background_rate:g} --json"}
