"""The shopper simulator's driver: shoppers search the running service over gRPC at a set rate, and what the click
model says they viewed, carted and bought goes to the behavior topics the service consumes.

One run (:func:`simulate`): make sure the service holds the catalog (cartwise/app/simulation/loading.py), draw
the shoppers (tastes from the seed) and the plan (which shopper searches which query, from the seed: two runs
with one seed ask the same questions whatever the service answers), then start search i at i/rate s after the
first, at most ``concurrency`` in flight (the service answers RESOURCE_EXHAUSTED beyond its own limit). Each
answer's page goes through the click model with a random stream of its own (seed, i); its views, carts and
purchases are published as :class:`cartwise.events.BehaviorEvent` s carrying the query and the answer's
``request_id``, keyed by user id (cartwise/app/replay.py's ``publish``), in that order per product.

Which ranking answers is chosen per request (``ranker_for``): by default every search asks the service's
hybrid retrieval; an experiment passes rankers of its own (e.g. hybrid for some shoppers, dense for others)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable

import grpc
from kafka.producer.future import FutureRecordMetadata

from cartwise.app.replay import publish
from cartwise.app.simulation.catalog import SimCatalog
from cartwise.app.simulation.click_model import Actions, ClickParams, Shown, act
from cartwise.app.simulation.loading import Progress, ensure_catalog
from cartwise.app.simulation.queries import ZIPF_EXPONENT, QuerySampler
from cartwise.app.simulation.shoppers import Shopper, Traits, make_shoppers
from cartwise.client import AsyncClient, Retrieval, SearchResult
from cartwise.datasets import Record
from cartwise.events import BehaviorEvent
from cartwise.kafka_io import make_producer
from cartwise.settings import Settings

SEARCH_TIMEOUT_S = 30.0
TOPIC_OF = {"view": "views", "cart": "carts", "purchase": "purchases"}  # event type -> Topics field


@dataclass(frozen=True)
class SimulationConfig:
    """A run: ``shoppers``, ``searches`` in all at ``rate`` searches per second, ``seed`` for tastes, plan and
    clicks, ``page_size`` hits per answer (what the click model sees), ``zipf_exponent`` of the query
    sampler, the click model's ``click`` parameters and ``concurrency`` searches in flight at most."""

    shoppers: int = 100
    searches: int = 1000
    rate: float = 40.0
    seed: int = 0
    page_size: int = 10
    zipf_exponent: float = ZIPF_EXPONENT
    click: ClickParams = ClickParams()
    concurrency: int = 8


@dataclass(frozen=True)
class Ranker:
    """A named way to ask for a ranking: ``search(client, query, user_id, limit)`` returns the answer."""

    name: str
    search: Callable[[AsyncClient, str, str, int], Awaitable[SearchResult]]


def retrieval_ranker(retrieval: Retrieval = Retrieval.HYBRID) -> Ranker:
    """A Ranker asking the service's Search with ``retrieval`` (SearchRequest.retrieval), named after it."""
    async def search(client: AsyncClient, query: str, user_id: str, limit: int) -> SearchResult:
        return await client.search(query, user_id=user_id, limit=limit, retrieval=retrieval,
                                   timeout_s=SEARCH_TIMEOUT_S)

    return Ranker(retrieval.name.lower(), search)


@dataclass(frozen=True)
class SearchOutcome:
    """One planned search: the ``index`` in the plan, who asked what, which ranker answered, and either the
    answer (``request_id``, ``model_version``, ``product_ids`` shown, the shopper's ``actions``) or ``error``
    (the gRPC status name)."""

    index: int
    user_id: str
    query: str
    ranker: str
    request_id: str = ""
    model_version: str = ""
    product_ids: tuple[str, ...] = ()
    actions: Actions = Actions((), (), ())
    error: str | None = None


@dataclass
class SimulationReport:
    """What a run did: every search's outcome (plan order), the seconds from the first search's start to the
    last answer and to the last start, the catalog events published before it (0: the service had them), and
    the behavior events the broker acknowledged and failed to take, by event type."""

    outcomes: list[SearchOutcome]
    elapsed_s: float
    started_s: float
    catalog_published: int
    produced: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)

    def summary(self) -> dict:
        """One JSON-ready dict: searches planned and answered, errors (in all and by status), the events
        produced by type, the seconds from the first start to the last answer, the achieved rate (searches
        started per second between the first and the last start, what ``rate`` asks for), the catalog events
        published, and the answers and actions per ranker."""
        answered = [o for o in self.outcomes if o.error is None]
        errors = Counter(o.error for o in self.outcomes if o.error is not None)
        return {"searches": len(self.outcomes), "answered": len(answered), "errors": sum(errors.values()),
                "errors_by_status": dict(errors), "views": self.produced["view"], "carts": self.produced["cart"],
                "purchases": self.produced["purchase"], "events_failed": sum(self.failed.values()),
                "elapsed_s": round(self.elapsed_s, 3),
                "achieved_rate": round((len(self.outcomes) - 1) / self.started_s, 3) if self.started_s > 0 else 0.0,
                "catalog_published": self.catalog_published, "by_ranker": _by_ranker(answered)}


def _by_ranker(answered: list[SearchOutcome]) -> dict[str, dict[str, int]]:
    """Answers, views, carts and purchases per ranker name (what the click model drew)."""
    table: dict[str, Counter] = {}
    for o in answered:
        counts = table.setdefault(o.ranker, Counter())
        counts.update({"answered": 1, "views": len(o.actions.views), "carts": len(o.actions.carts),
                       "purchases": len(o.actions.purchases)})
    return {name: dict(counts) for name, counts in table.items()}


def plan(config: SimulationConfig, catalog: SimCatalog, rng: random.Random) -> list[tuple[int, str]]:
    """(shopper index, query) of every search, drawn with ``rng``: shoppers uniformly, queries from a
    :class:`QuerySampler` over the catalog's train-split queries."""
    sampler = QuerySampler(list(catalog.qrels), rng, config.zipf_exponent)
    return [(rng.randrange(config.shoppers), sampler.draw(rng)) for _ in range(config.searches)]


def behavior_records(shopper: Shopper, query: str, result: SearchResult, actions: Actions) -> list[Record]:
    """The events of ``actions`` on ``result``'s page, each product's view before its cart before its purchase:
    keyed by user id, carrying the query and the answer's request id (``event_id`` = ``sim-<request id>-<rank>-
    <type>``, unique per answer)."""
    now, records = datetime.now(timezone.utc), []
    kinds = {rank: ["view"] + ["cart"] * (rank in actions.carts) + ["purchase"] * (rank in actions.purchases)
             for rank in actions.views}
    for rank, types in kinds.items():
        for kind in types:
            event = BehaviorEvent(event_id=f"sim-{result.request_id}-{rank}-{kind}", event_time=now,
                                  event_type=kind, user_id=shopper.user_id, product_id=result.hits[rank - 1].product_id,
                                  query=query, request_id=result.request_id)
            records.append(Record(TOPIC_OF[kind], shopper.user_id, event))
    return records


class _Run:
    """The state of one run's search phase: the client, the producer, the shoppers and what came back."""

    def __init__(self, settings: Settings, client: AsyncClient, catalog: SimCatalog, config: SimulationConfig,
                 shoppers: list[Shopper], ranker_for: Callable[[Shopper, int], Ranker]) -> None:
        self.settings, self.client, self.catalog, self.config = settings, client, catalog, config
        self.shoppers, self.ranker_for = shoppers, ranker_for
        self.producer = make_producer(settings)
        for name in TOPIC_OF.values():  # the first send to a topic blocks for its metadata: not in the paced loop
            self.producer.partitions_for(getattr(settings.topics, name))
        self.sends: list[tuple[str, FutureRecordMetadata]] = []  # (event type, the send's future)

    def page(self, shopper: Shopper, query: str, result: SearchResult) -> list[Shown]:
        """The answer's hits as the click model sees them: grade for ``query``, affinity, bought before."""
        judged = self.catalog.qrels.get(query, {})
        return [Shown(judged.get(hit.product_id), shopper.affinity(self.catalog.traits.get(hit.product_id, Traits())),
                      hit.product_id in shopper.bought) for hit in result.hits]

    async def one(self, index: int, shopper: Shopper, query: str) -> SearchOutcome:
        """Search ``index`` of the plan: ask, act on the page, send the events (not waiting for acks)."""
        ranker = self.ranker_for(shopper, index)
        try:
            result = await ranker.search(self.client, query, shopper.user_id, self.config.page_size)
        except grpc.aio.AioRpcError as err:
            return SearchOutcome(index, shopper.user_id, query, ranker.name, error=err.code().name)
        actions = act(self.page(shopper, query, result), random.Random(f"{self.config.seed}:{index}"),
                      self.config.click)
        for record in behavior_records(shopper, query, result, actions):
            self.sends.append((record.event.event_type, publish(self.producer, self.settings.topics, record)))
        shopper.bought.update(result.hits[rank - 1].product_id for rank in actions.purchases)
        return SearchOutcome(index, shopper.user_id, query, ranker.name, result.request_id, result.model_version,
                             tuple(hit.product_id for hit in result.hits), actions)

    async def run(self, planned: list[tuple[int, str]], progress: Progress
                  ) -> tuple[list[SearchOutcome], float, float]:
        """Every planned search, paced and bounded (module doc); (outcomes in plan order, s from the first start
        to the last answer, s from the first start to the last)."""
        slots, outcomes = asyncio.Semaphore(self.config.concurrency), [None] * len(planned)
        done = 0

        async def bounded(index: int, who: int, query: str) -> None:
            nonlocal done
            try:
                outcomes[index] = await self.one(index, self.shoppers[who], query)
            finally:
                slots.release()
                done += 1
                progress("searching", done, len(planned))

        started, tasks = time.monotonic(), []
        for index, (who, query) in enumerate(planned):
            await asyncio.sleep(max(0.0, started + index / self.config.rate - time.monotonic()))
            await slots.acquire()
            tasks.append(asyncio.create_task(bounded(index, who, query)))
        last_start = time.monotonic() - started
        await asyncio.gather(*tasks)
        return outcomes, time.monotonic() - started, last_start

    def flush(self) -> tuple[Counter, Counter]:
        """Wait for the broker's acks; (acknowledged, failed) events by type. Blocking."""
        self.producer.flush()
        produced, failed = Counter(), Counter()
        for kind, future in self.sends:
            (failed if future.failed() else produced)[kind] += 1
        self.producer.close()
        return produced, failed


async def simulate(settings: Settings, catalog: SimCatalog, config: SimulationConfig,
                   ranker_for: Callable[[Shopper, int], Ranker] | None = None, target: str | None = None,
                   progress: Progress = lambda stage, done, total: None) -> SimulationReport:
    """Run the simulation against the service at ``target`` (default: the settings' API) and the broker of
    ``settings`` (module doc). ``ranker_for(shopper, index)`` picks each search's Ranker (default: hybrid).
    Raises ValueError for a config without shoppers, searches or rate; grpc.aio.AioRpcError when the service
    cannot be asked for the catalog; kafka.errors.KafkaError without a broker; TimeoutError when the catalog is
    not indexed within an hour."""
    if config.shoppers < 1 or config.searches < 1 or config.rate <= 0 or config.concurrency < 1:
        raise ValueError(f"need shoppers, searches, concurrency >= 1 and rate > 0: {config}")
    hybrid = retrieval_ranker()
    ranker_for = ranker_for or (lambda shopper, index: hybrid)
    rng = random.Random(config.seed)
    shoppers = make_shoppers(config.shoppers, catalog.traits, rng, prefix=f"sim{config.seed}")
    planned = plan(config, catalog, rng)
    async with AsyncClient(target, settings, timeout_s=SEARCH_TIMEOUT_S) as client:
        published = await ensure_catalog(settings, client, catalog, config.seed, progress=progress)
        run = _Run(settings, client, catalog, config, shoppers, ranker_for)
        try:
            outcomes, elapsed, started = await run.run(planned, progress)
        finally:
            produced, failed = await asyncio.to_thread(run.flush)
    return SimulationReport(outcomes, elapsed, started, published, produced, failed)
