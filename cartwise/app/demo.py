"""``cartwise demo``: the story of Cartwise in one command, on real data, through the real service (embedded
broker, stream worker, Qdrant Edge, gRPC API, called with cartwise.client).

1. **Search**: a Home Depot subset (the judged validation queries, never trained on, in file order, as long as
   their judged products number at most ``homedepot_products``) goes into the catalog topic; every judged query
   is searched with BM25, the encoder alone (semantic) and hybrid retrieval, and each is scored by nDCG@10
   against the human judgments. The queries shown are those where hybrid gains most over BM25, chosen by that
   rule at run time.
2. **Live personalization**: REES46 is replayed minus a few held-back cart events of users with a history;
   each held-back cart is sent live, one at a time, and the same personalized search is run before and after
   it, timing the event-to-answer delay. The user shown is the one whose carted product rose most.

Logs stay quiet because the events are published in chunks of ``CHUNK``, each once the worker has consumed the
last: published all at once, the worker's batches grow to ``catalog_batch`` (256) events of distinct users,
whose history writes exceed faust's changelog producer buffer (100 records), and faust warns "producer buffer
full" once per batch. The demo's catalog stays small enough for exact search, so its service never builds an
HNSW graph (a build holds the GIL for seconds, and the stream worker's timers then warn that they overlap)."""

from __future__ import annotations

import asyncio
import html
import shutil
import signal
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from portpicker import pick_unused_port

from cartwise.app.bench.common import copy_versions
from cartwise.app.replay import publish, replay
from cartwise.app.service import Service, ensure_active_model
from cartwise.client import AsyncClient, Filter, Retrieval, SearchResult
from cartwise.datasets import Record, homedepot_records, rees46_records
from cartwise.kafka_io import make_producer
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from trainer.data import split_of
from trainer.evaluation.homedepot import load_homedepot
from trainer.evaluation.metrics import ndcg_at

HOMEDEPOT_PRODUCTS = 5_000
CHUNK = 90             # events published at a time: under faust's changelog buffer bound (module doc)
TOP_K = 10             # nDCG@10, and the rows of a before/after table
SHOWN = 5              # rows of a BM25 / hybrid comparison
SHOWCASE = 3           # Home Depot queries shown
CARTS_TRIED = 8        # REES46 carts sent live
RANK_DEPTH = 100
ANSWER_WAIT_S = 10.0   # how long a live cart may take to change its user's answer
CONCURRENCY = 8        # Search calls in flight while scoring the Home Depot queries
NO_HNSW_S, NO_HNSW_UPSERTS = 86_400.0, 1_000_000  # the demo's ~11k products are searched exactly (module doc)
RETRIEVALS = {"BM25": Retrieval.LEXICAL, "semantic": Retrieval.DENSE, "hybrid": Retrieval.HYBRID}


@dataclass(frozen=True)
class Cart:
    """A held-back REES46 cart: the event, the carted product's catalog event, and the search it should
    change: the product's leaf category as the query, within its top-level category."""

    record: Record
    product: Record

    @property
    def user_id(self) -> str:
        return self.record.event.user_id

    @property
    def query(self) -> str:
        return self.product.event.category_path[-1].replace("_", " ")

    @property
    def within(self) -> Filter:
        return Filter(category_prefix=(self.product.event.category_path[0],))


def homedepot_subset(max_products: int) -> tuple[list[Record], dict[str, dict[str, float]]]:
    """(catalog records, qrels) of the Home Depot validation queries in file order, as long as their judged
    products number at most ``max_products``; qrels map query -> {product_id: grade 1..3}."""
    data = load_homedepot()
    qrels: dict[str, dict[str, float]] = {}
    products: set[str] = set()
    for query, judged in data.qrels.items():
        if split_of(query) != "val":
            continue
        if len(products | judged.keys()) > max_products:
            break
        qrels[query] = judged
        products |= judged.keys()
    return [r for r in homedepot_records() if r.key in products], qrels


def choose_carts(records: list[Record], n: int) -> list[Cart]:
    """Up to ``n`` carts, one per user, that a user vector can show.

    A cart moves a user vector only as far as the rest of the history points elsewhere: REES46 products
    that share a title (brand + leaf category) share one vector, and nearly every cart follows views of
    that same product. So the carts taken are those (of categorized products) whose users have the most
    earlier interactions with products of *other* titles."""
    catalog = {r.key: r for r in records if r.topic_field == "catalog"}
    titles_seen: dict[str, Counter[str]] = {}  # user -> product title -> interactions
    best: dict[str, tuple[int, Record]] = {}  # user -> (interactions elsewhere, their best cart)
    for record in records:
        if record.topic_field == "catalog":
            continue
        user, product = record.event.user_id, catalog[record.event.product_id].event
        seen = titles_seen.setdefault(user, Counter())
        elsewhere = sum(seen.values()) - seen[product.title]
        if record.topic_field == "carts" and product.category_path and elsewhere > best.get(user, (0,))[0]:
            best[user] = (elsewhere, record)
        seen[product.title] += 1
    chosen = sorted(best.values(), key=lambda pair: (-pair[0], pair[1].event.event_id))[:n]
    return [Cart(record, catalog[record.event.product_id]) for _, record in chosen]


def _carts(n: int) -> str:
    return f"{n} cart" + ("s" if n != 1 else "")


def _rank(result: SearchResult, title: str) -> int | None:
    """Rank of the first hit titled ``title``: REES46 products of one title share one text, and the service
    shows one product per identical text."""
    return next((k for k, hit in enumerate(result.hits, start=1) if hit.title == title), None)


def _shown_rank(rank: int | None) -> str:
    return str(rank) if rank else f">{RANK_DEPTH}"


async def score_retrievals(client: AsyncClient, qrels: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """nDCG@10 per retrieval name (``RETRIEVALS``) per query, over the queries with a relevant product."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def ndcg(query: str, retrieval: Retrieval) -> float | None:
        async with gate:
            result = await client.search(query, limit=TOP_K, retrieval=retrieval, timeout_s=30)
        return ndcg_at([hit.product_id for hit in result.hits], qrels[query], TOP_K)

    names = [(name, query) for name in RETRIEVALS for query in qrels]
    values = await asyncio.gather(*(ndcg(query, RETRIEVALS[name]) for name, query in names))
    scores: dict[str, dict[str, float]] = {name: {} for name in RETRIEVALS}
    for (name, query), value in zip(names, values):
        if value is not None:
            scores[name][query] = value
    return scores


def _summary(scores: dict[str, dict[str, float]], products: int) -> Table:
    table = Table(title=f"Home Depot: {len(scores['BM25'])} judged queries over {products:,} products, "
                        f"nDCG@{TOP_K} against the human grades", title_justify="left")
    for column in ("retrieval", f"nDCG@{TOP_K}", "best on"):
        table.add_column(column, justify="left" if column == "retrieval" else "right")
    queries = list(scores["BM25"])
    wins = Counter(max(RETRIEVALS, key=lambda name: scores[name][q]) for q in queries
                   if len({scores[name][q] for name in RETRIEVALS}) > 1)
    for name in RETRIEVALS:
        style = "bold green" if name == "hybrid" else None
        table.add_row(name, f"{statistics.fmean(scores[name].values()):.3f}", f"{wins[name]} queries", style=style)
    return table


def _side_by_side(query: str, lexical: SearchResult, hybrid: SearchResult, judged: dict[str, float],
                  scores: dict[str, dict[str, float]]) -> Table:
    table = Table(title=f"{query!r}: BM25 nDCG@{TOP_K} {scores['BM25'][query]:.2f} -> hybrid "
                        f"{scores['hybrid'][query]:.2f}   (grade: 3 relevant .. 1 irrelevant, - unjudged)",
                  title_justify="left")
    for column in ("#", "BM25", "grade", "Cartwise hybrid", "grade "):
        table.add_column(column, justify="right" if column in ("#",) else "left", max_width=52)
    for k in range(SHOWN):
        row = [str(k + 1)]
        for result in (lexical, hybrid):
            hit = result.hits[k] if k < len(result.hits) else None
            grade = judged.get(hit.product_id) if hit else None
            row += [html.unescape(hit.title) if hit else "", f"{grade:.1f}" if grade else "-"]
        table.add_row(*row)
    return table


async def tell_search(client: AsyncClient, console: Console, qrels: dict[str, dict[str, float]],
                      products: int) -> None:
    """Act 1: score BM25, semantic and hybrid on every judged query, show the mean and the queries where
    hybrid gains most over BM25."""
    with console.status(f"searching {len(qrels)} judged queries three ways"):
        scores = await score_retrievals(client, qrels)
    console.print(_summary(scores, products))
    gains = sorted(scores["BM25"], key=lambda q: (scores["BM25"][q] - scores["hybrid"][q], q))[:SHOWCASE]
    for query in gains:
        lexical = await client.search(query, limit=SHOWN, retrieval=Retrieval.LEXICAL)
        hybrid = await client.search(query, limit=SHOWN)
        console.print(_side_by_side(query, lexical, hybrid, qrels[query], scores))


@dataclass(frozen=True)
class LiveCart:
    """A cart sent live: the answers before and after, and the event-to-answer delay (s)."""

    cart: Cart
    before: SearchResult
    after: SearchResult
    seconds: float

    @property
    def rise(self) -> int:
        """How many places the carted product's title rose within the top RANK_DEPTH (absent: below it)."""
        title = self.cart.product.event.title
        return (_rank(self.before, title) or RANK_DEPTH + 1) - (_rank(self.after, title) or RANK_DEPTH + 1)


async def send_cart(client: AsyncClient, producer, settings: Settings, cart: Cart) -> LiveCart:
    """Search, send ``cart`` to Kafka, and poll the same search until the user's interactions change (at most
    ANSWER_WAIT_S)."""
    async def search() -> SearchResult:
        return await client.search(cart.query, user_id=cart.user_id, limit=RANK_DEPTH, filter=cart.within)

    before = await search()
    started = time.perf_counter()
    await asyncio.to_thread(lambda: (publish(producer, settings.topics, cart.record), producer.flush()))
    after = before
    while after.user_interactions == before.user_interactions and time.perf_counter() - started < ANSWER_WAIT_S:
        await asyncio.sleep(0.005)
        after = await search()
    return LiveCart(cart, before, after, time.perf_counter() - started)


def _before_after(live: LiveCart) -> Table:
    cart, title = live.cart, live.cart.product.event.title
    table = Table(title=f"{cart.query!r} in {cart.within.category_prefix[0]} for REES46 user {cart.user_id}: "
                        f"before ({live.before.user_interactions} interactions, "
                        f"alpha {live.before.personalization_weight:.2f}) and after the cart "
                        f"(alpha {live.after.personalization_weight:.2f})", title_justify="left")
    for column in ("#", "before", "personal", "after", "personal "):
        table.add_column(column, justify="left" if column in ("before", "after") else "right")
    for k in range(TOP_K):
        row, styles = [str(k + 1)], []
        for result in (live.before, live.after):
            hit = result.hits[k] if k < len(result.hits) else None
            row += [f"{hit.title} ({hit.price:.0f})" if hit else "", f"{hit.personal_score:.3f}" if hit else ""]
            styles.append(hit is not None and hit.title == title)
        if styles[1]:
            row[3] = f"[bold yellow]{row[3]}[/]"
        if styles[0]:
            row[1] = f"[bold yellow]{row[1]}[/]"
        table.add_row(*row)
    return table


async def tell_personalization(client: AsyncClient, console: Console, settings: Settings,
                               carts: list[Cart]) -> None:
    """Act 2: send each held-back cart live and show the user whose carted product rose most."""
    producer = make_producer(settings)
    try:
        with console.status(f"sending {_carts(len(carts))} live, one at a time"):
            lives = [await send_cart(client, producer, settings, cart) for cart in carts]
    finally:
        producer.close()
    lives = [live for live in lives if live.after.user_interactions != live.before.user_interactions]
    if not lives:
        console.print(f"[red]no answer changed within {ANSWER_WAIT_S:.0f} s of its cart event[/]")
        return
    shown = max(lives, key=lambda live: (live.rise, -live.seconds))
    event = shown.cart.product.event
    console.print(f"\nLive: REES46 user {shown.cart.user_id} adds [bold]{event.title}[/] (product "
                  f"{shown.cart.product.key}, {event.price:.2f}) to the cart; the event went through Kafka and "
                  f"the stream worker and changed the answer [bold]{shown.seconds * 1000:.0f} ms[/] later.")
    console.print(_before_after(shown))
    console.print(f"{event.title!r} (highlighted): rank {_shown_rank(_rank(shown.before, event.title))} before, "
                  f"[bold]{_shown_rank(_rank(shown.after, event.title))}[/] after (of the top {RANK_DEPTH})")
    delays = sorted(live.seconds * 1000 for live in lives)
    console.print(f"event to answer over the {_carts(len(lives))} sent: median {statistics.median(delays):.0f} ms, "
                  f"max {delays[-1]:.0f} ms")
    console.print("[dim]REES46 has no titles: a title is brand + leaf category, and products sharing one share "
                  "a vector.[/]")


def demo_settings(settings: Settings, scratch: Path, playground: bool) -> Settings:
    """The demo's own service: a scratch data dir, the embedded broker in memory, free ports, and the search
    playground when asked (on CARTWISE_PLAYGROUND_PORT, else a free port). It neither doubles the events of the
    user's `cartwise serve` nor finds its own held-back carts there next time."""
    return settings.model_copy(update={"data_dir": scratch, "kafka_bootstrap": None, "embedded_kafka_storage": "memory",
                                       "embedded_kafka_port": pick_unused_port(), "embedded_storage_port": pick_unused_port(),
                                       "grpc_port": pick_unused_port(), "optimize_quiet_s": NO_HNSW_S,
                                       "playground_port": (settings.playground_port or 0) if playground else None,
                                       "optimize_after_upserts": NO_HNSW_UPSERTS})


def _chunks(records: list[Record], skip, size: int | None) -> list[list[Record]]:
    kept = [r for r in records if not skip(r)]
    size = size or len(kept) or 1
    return [kept[i:i + size] for i in range(0, len(kept), size)]


async def _load(service: Service, console: Console, label: str, records: list[Record],
                skip=lambda r: False, chunk: int | None = CHUNK) -> None:
    """Publish ``records`` (less ``skip``) in chunks of ``chunk`` (None: all at once), each once the worker
    has consumed the one before, so no batch of the worker writes more histories than faust's changelog
    buffer holds (catalog events write none)."""
    producer = make_producer(service.settings)
    started, sent = time.perf_counter(), 0
    try:
        with console.status(f"{label}: publishing events to Kafka"):
            for part in _chunks(records, skip, chunk):
                consumed = service.worker.consumed
                sent += await asyncio.to_thread(replay, part, producer, service.settings.topics)
                await service.wait_until_consumed(consumed + len(part), timeout_s=300)
    finally:
        producer.close()
    console.log(f"{label}: {sent:,} events through Kafka and the stream worker in "
                f"{time.perf_counter() - started:.1f} s")


def _playground(service: Service) -> str | None:
    playground = service.playground
    return f"http://{service.settings.playground_host}:{playground.port}/" if playground else None


async def _serve_until_stopped(console: Console, service: Service, target: str) -> None:
    console.print(f"\nserving until Ctrl-C: the search playground on [bold]{_playground(service)}[/], gRPC on "
                  f"{target} (try `cartwise search \"cordless drill\" --target {target}`)")
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_demo(settings: Settings, console: Console, homedepot_products: int = HOMEDEPOT_PRODUCTS,
                   carts_tried: int = CARTS_TRIED, keep_serving: bool = False, rees46_rows: int | None = None) -> None:
    """Tell both acts (module doc) on a scratch embedded service, then stop it (or serve until a signal with
    ``keep_serving``); ``rees46_rows`` replays only the first rows of REES46 (tests). Raises what the service
    raises (BrokerError, TimeoutError), and SystemExit when the data holds no cart to send live."""
    started = time.perf_counter()
    with console.status("preparing the model (the first run exports the encoder to ONNX and quantizes it)"):
        version = ensure_active_model(ModelRegistry(settings.models_dir), settings.encoder_precision)
    catalog, qrels = homedepot_subset(homedepot_products)
    rees46 = list(rees46_records(limit=rees46_rows))
    carts = choose_carts(rees46, carts_tried)
    if not carts:
        raise SystemExit("no REES46 cart of a user with an earlier history to send live")
    held_back = {id(cart.record) for cart in carts}
    scratch = Path(tempfile.mkdtemp(prefix="cartwise-demo-"))
    copy_versions(settings.models_dir, [version], scratch / "models")
    service = Service(demo_settings(settings, scratch, keep_serving))
    with console.status("starting the embedded service (Kafka-compatible broker, stream worker, Qdrant Edge, gRPC)"):
        await service.start()
    target = f"{service.settings.grpc_host}:{service.port}"
    console.log(f"service up: model {version}, gRPC on {target}")
    try:
        async with AsyncClient(target, service.settings) as client:
            await _load(service, console, "Home Depot catalog", catalog, chunk=None)
            await tell_search(client, console, qrels, len(catalog))
            await _load(service, console, f"REES46 replay (holding back {_carts(len(carts))})", rees46,
                        skip=lambda r: id(r) in held_back)
            await tell_personalization(client, console, service.settings, carts)
        console.log(f"demo told in {time.perf_counter() - started:.0f} s")
        if keep_serving:
            await _serve_until_stopped(console, service, target)
        else:
            console.print("To look at these answers in the browser: `cartwise demo --keep-serving` keeps this service "
                          "up with the search playground, or `CARTWISE_PLAYGROUND_PORT=8080 cartwise serve` serves "
                          "it on http://127.0.0.1:8080/ beside your own data.")
    finally:
        await service.stop()
        shutil.rmtree(scratch, ignore_errors=True)
