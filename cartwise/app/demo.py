"""``cartwise demo``: the embedded service on real REES46 data, showing one real user's results for a
query before and after one of their cart events is replayed live."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cartwise.app.bench.common import copy_versions
from cartwise.client import AsyncClient
from cartwise.app.replay import publish, replay
from cartwise.app.service import Service, ensure_active_model
from cartwise.datasets import Record, rees46_records
from cartwise.kafka_io import make_producer
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings


def choose_cart_event(records: list[Record], user_id: str | None) -> tuple[Record, Record]:
    """The held-back cart event and its product's catalog record.

    A cart moves a user vector only as far as the rest of the history points elsewhere: REES46 products
    that share a title (brand + leaf category) share one vector, and nearly every cart follows views of
    that same product. So by default the demo takes the cart (of a categorized product) whose user has the
    most earlier interactions with products of *other* titles. ``user_id`` takes that user's best cart."""
    catalog = {r.key: r.event for r in records if r.topic_field == "catalog"}
    titles_seen: dict[str, Counter[str]] = {}  # user -> product title -> interactions
    best: tuple[int, Record] | None = None
    for record in records:
        if record.topic_field == "catalog":
            continue
        user, product = record.event.user_id, catalog[record.event.product_id]
        seen = titles_seen.setdefault(user, Counter())
        elsewhere = sum(seen.values()) - seen[product.title]
        if (record.topic_field == "carts" and product.category_path and user_id in (None, user)
                and (best is None or elsewhere > best[0])):
            best = (elsewhere, record)
        seen[product.title] += 1
    if best is None:
        raise SystemExit(f"no cart of a categorized product for user {user_id}")
    return best[1], Record("catalog", best[1].event.product_id, catalog[best[1].event.product_id])


RANK_DEPTH = 100
SHOWN = 10


def _rank(response, product_id: str) -> str:
    ranks = [k for k, hit in enumerate(response.hits, start=1) if hit.product_id == product_id]
    return str(ranks[0]) if ranks else f">{RANK_DEPTH}"


def _table(response, title: str, highlight_brand: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("#", "title", "price", "score", "personal"):
        table.add_column(name, justify="left" if name == "title" else "right")
    for rank, hit in enumerate(response.hits[:SHOWN], start=1):
        style = "bold yellow" if hit.brand.lower() == highlight_brand else None
        table.add_row(str(rank), hit.title, f"{hit.price:.2f}", f"{hit.score:.3f}", f"{hit.personal_score:.3f}",
                      style=style)
    return table


async def run_demo(settings: Settings, console: Console, user_id: str | None = None) -> None:
    """Start the embedded service, replay REES46 minus one cart event, search, send the cart, search again."""
    records = list(rees46_records())
    cart, product = choose_cart_event(records, user_id)
    # A broad query (the parent category) is where a shopper's history should matter most.
    user, query = cart.event.user_id, product.event.category_path[0].replace("_", " ")
    brand = (product.event.brand or "").lower()
    with console.status("preparing the model (first run exports the encoder to ONNX)"):
        version = ensure_active_model(ModelRegistry(settings.models_dir), settings.encoder_precision)
    # The demo replays everything into a scratch service of its own (broker in memory), so it neither
    # doubles the events of the user's `cartwise serve` nor finds its own held-back cart there next time.
    scratch = Path(tempfile.mkdtemp(prefix="cartwise-demo-"))
    copy_versions(settings.models_dir, [version], scratch / "models")
    service = Service(settings.model_copy(update={"data_dir": scratch, "kafka_bootstrap": None,
                                                  "embedded_kafka_storage": "memory"}))
    with console.status("starting the embedded service"):
        await service.start()
    try:
        producer = make_producer(service.settings)
        with console.status(f"replaying {len(records) - 1} REES46 events (holding back {cart.event.event_id})"):
            sent = await asyncio.to_thread(replay, records, producer, service.settings.topics,
                                           skip=lambda r: r is cart)
            await service.wait_until_consumed(sent)
        async with AsyncClient(f"{service.settings.grpc_host}:{service.port}", service.settings) as client:
            before = await client.search(query, user_id=user, limit=RANK_DEPTH)
            console.print(_table(before, f"before: {query!r} for REES46 user {user} "
                                         f"({before.user_interactions} interactions, alpha={before.personalization_weight:.2f})",
                                 brand))
            console.print(f"live cart event: user {user} adds [bold]{product.event.title}[/] "
                          f"(product {product.key}, {product.event.price:.2f}) to the cart")
            started = time.perf_counter()
            publish(producer, service.settings.topics, cart)
            producer.flush()
            after = before
            while after.user_interactions == before.user_interactions and time.perf_counter() - started < 10:
                after = await client.search(query, user_id=user, limit=RANK_DEPTH)
            seconds = time.perf_counter() - started
            console.print(_table(after, f"after ({seconds * 1000:.0f} ms later): {query!r} for user {user} "
                                        f"({after.user_interactions} interactions, alpha={after.personalization_weight:.2f})",
                                 brand))
        console.print(f"carted product {product.key}: rank {_rank(before, product.key)} before, "
                      f"{_rank(after, product.key)} after (of the top {RANK_DEPTH})")
        console.print("[dim]REES46 has no titles: products sharing brand and leaf category share one text and so one "
                      "vector, and a cart lifts that whole group (score and personal columns).[/]")
        producer.close()
    finally:
        await service.stop()
        shutil.rmtree(scratch, ignore_errors=True)
