"""The stream worker: its faust app (streams/faust_config.py) with the user-history and tombstones Tables
(changelogs in Kafka, state mirrored on local disk), and the parts wired to it: the catalog agent
(streams/catalog_agent.py), the behavior agent with its retry timer for users whose products were not in
the catalog yet (streams/behavior_agent.py), dead-lettering of invalid events (streams/dead_letters.py),
the models.updates agent that drives model swaps (streams/swap.py), the popularity counts, the HNSW
builds (streams/indexing.py) and, on Qdrant Edge, the index flush."""

from __future__ import annotations

import asyncio
import logging

import faust

from cartwise.index import VectorIndex
from cartwise.lexical import LexicalEncoder
from cartwise.lifecycle import ModelUpdate
from cartwise.settings import Settings
from encoders.bulk import BulkEncoder
from streams.behavior_agent import BehaviorAgent
from streams.catalog_agent import CatalogAgent
from streams.dead_letters import DeadLetters
from streams.erasure import StreamClock
from streams.event_ages import EventAges
from streams.event_counts import EventCounts
from streams.faust_config import worker_app
from streams.faust_hooks import RawKeyTable, assigned_partitions
from streams.index_calls import IndexCalls
from streams.indexing import ProductIndexing
from streams.popularity import PopularityCounts
from streams.swap import REPAIR_REASON, SwapCoordinator, WorkerHooks
from streams.table_recovery import complete_recovery_of
from streams.table_store import LocalStore
from streams.targets import WriteTargets
from streams.user_points import UserPoints

log = logging.getLogger(__name__)

HISTORY_TABLE = "user_histories"  # user_id -> history; changelog ``{app_id}-user_histories-changelog``
TOMBSTONE_TABLE = "product_tombstones"  # product_id -> event time (s) of its newest deletion
INDEX_FLUSH_S = 15.0  # Qdrant Edge's write-ahead log is cut back to its flushed segments this often


class StreamWorker:
    """Stream processing for one process: builds the faust app, its Tables and the parts (module doc) and
    wires them together; writes into the collections of every write target. ``await worker.start(active)``
    with the registry's active version, ``await worker.stop()``.

    Counters since start: ``counts`` (events by outcome and topic, counted once whatever the number of
    targets: streams/event_counts.py) and ``consumed``, their total; ``behavior.forgotten`` (erasure
    requests applied) and ``behavior.expired`` (users removed by the TTL in stream time, ``clock``)."""

    def __init__(self, settings: Settings, index: VectorIndex) -> None:
        self.settings, self.index, self.targets = settings, index, WriteTargets()
        self.calls = IndexCalls(index.remote)  # every index call of the worker goes through it
        self.points = UserPoints(index, settings.user_cache_size)
        self.popularity = PopularityCounts(index, settings.personalization, settings.popularity_half_life_s)
        self.counts = EventCounts()
        self.event_ages = EventAges()  # the freshness breakdown per stage (streams/event_ages.py)
        self.clock = StreamClock(settings.user_ttl_s)
        self.bulk = BulkEncoder(settings.bulk_encode_threads)  # the catalog agent's and the backfill's
        self.lexical = LexicalEncoder(settings.lexical)
        self.indexing = ProductIndexing(index, settings.optimize_quiet_s, settings.optimize_after_upserts)
        self.app = worker_app(settings)
        topics = settings.topics
        self.catalog_topic = self._raw_topic(topics.catalog)
        self.behavior_topics = self._raw_topic(*topics.user_keyed)
        self.histories = self._table(HISTORY_TABLE)
        self.tombstones = self._table(TOMBSTONE_TABLE)  # streams/catalog.py
        self.updates_topic = self._raw_topic(topics.models_updates)
        dead_letters = DeadLetters(self.app, settings.event_limits, self.counts)
        self.behavior = BehaviorAgent(settings, index, self.calls, self.points, self.popularity, self.targets,
                                      self.histories, self.clock, dead_letters, self.counts, self.event_ages)
        complete_recovery_of(self.histories, settings, then=self.behavior.on_histories_recovered)
        complete_recovery_of(self.tombstones, settings)
        hooks = WorkerHooks(announce=self._announce, ready=self._table_recovered, flush=self._flush,
                            owned=self._owned_history_partitions, leads=self._leads,
                            changelog=self.histories.changelog_topic.get_topic_name(), partitions=settings.partitions)
        self.swaps = SwapCoordinator(settings, index, self.calls, self.points, self.targets, self.histories,
                                     self.tombstones, self.lexical, self.bulk, hooks)
        catalog = CatalogAgent(settings, index, self.calls, self.targets, self.lexical, self.bulk, self.tombstones,
                               self.indexing, self.swaps.running, dead_letters, self.counts, self.event_ages,
                               applied=self.behavior.catalog_changed)
        self.app.agent(self.catalog_topic, name="catalog")(catalog.run)
        self.app.agent(self.behavior_topics, name="behavior")(self.behavior.run)
        self.app.agent(self.updates_topic, name="model-updates")(self._updates_agent)
        self.app.timer(1.0)(self.behavior.retry_pending)
        self.app.timer(1.0)(self._categorize_popular)
        self.app.timer(1.0)(self.indexing.tick)
        if hasattr(index, "flush"):  # Qdrant Edge (cartwise/index/edge.py); a Qdrant server flushes by itself
            self.app.timer(INDEX_FLUSH_S)(self._flush_index)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self._follow: asyncio.Task | None = None

    def _raw_topic(self, *names: str) -> faust.TopicT:
        return self.app.topic(*names, key_type=bytes, value_type=bytes, value_serializer="raw")

    def _table(self, name: str) -> faust.Table:
        # use_partitioner: batches (take_events) write outside per-event context
        directory = self.settings.tables_dir
        table = RawKeyTable(self.app, name=name, default=None, beacon=self.app.tables.beacon,
                            partitions=self.settings.partitions, use_partitioner=True, key_type=str,
                            store=lambda t: LocalStore.of(t, directory))
        return self.app.tables.add(table)

    @property
    def consumed(self) -> int:
        """Events consumed since start: applied + stale + dead-lettered."""
        return self.counts.consumed

    def status(self) -> dict:
        """The counters since start, stream time (s since the epoch), and the backfill under way: the
        version being built by a swap or a repair (empty when none) and whether it is a repair."""
        backfill = self.swaps.running()
        counts, behavior = self.counts, self.behavior
        return {"applied": counts.applied, "dead_lettered": counts.dead_lettered, "stale": counts.stale,
                "forgotten": behavior.forgotten, "expired": behavior.expired, "stream_time": self.clock.now,
                "backfill_version": backfill.version if backfill else "",
                "repair_running": bool(backfill and backfill.reason == REPAIR_REASON)}

    async def start(self, active: str, sources_kept: bool = True) -> None:
        """Recover the write targets from the swap journal (``active``: the registry's active version),
        follow the swap control topic (streams/swap.py: this worker resumes an interrupted backfill when it
        leads, or starts a repair when the index lacks the active version's collections and
        ``sources_kept``, the broker kept its topics) and start consuming (joins the consumer group,
        recovers the Tables from their changelogs). Raises cartwise.registry.RegistryError,
        kafka.errors.KafkaError."""
        await self.swaps.recover(active, sources_kept)
        await self.calls.run(self.popularity.ensure_collection)
        for model in self.targets.models():  # written before a restart, maybe never optimized (a no-op if done)
            for collection in (model.groups, model.products):
                if await self.calls.run(self.index.has_collection, collection):
                    self.indexing.wrote(collection, 1)
        self._follow = asyncio.create_task(self.swaps.follow())
        await self.app.start()

    async def _on_partitions_revoked(self, sender, revoked, **kwargs) -> None:
        """Another worker may own these users next: their cached points and counts would go stale."""
        await self.calls.run(self._clear_caches)

    def _clear_caches(self) -> None:
        self.points.clear()
        self.popularity.clear()

    async def stop(self) -> None:
        """Stop consuming (a running backfill stops where its journal says, for the next leader to resume)
        and release the encode thread."""
        if self._follow:
            self._follow.cancel()
            await asyncio.gather(self._follow, return_exceptions=True)
        await self.app.stop()
        await self.swaps.close()
        await self.indexing.stop()
        self.bulk.close()
        self.calls.close()

    async def _table_recovered(self) -> None:
        await self.app.tables.recovery.completed.wait()

    async def _flush(self) -> None:
        await self.app.producer.flush()

    def _owned_history_partitions(self) -> set[int]:
        """The user-history partitions this worker owns: those of the user-keyed source topics it is assigned
        (faust assigns co-partitioned topics, and the Table's changelog, partition by partition)."""
        return {tp.partition for tp in assigned_partitions(self.app) if tp.topic == self.settings.topics.purchases}

    def _leads(self) -> bool:
        """Whether this worker owns the models.updates partition, and so leads swaps (streams/swap.py)."""
        return any(tp.topic == self.settings.topics.models_updates for tp in assigned_partitions(self.app))

    async def _announce(self, update: ModelUpdate) -> None:
        await self.updates_topic.send(key=update.version.encode(), value=update.encode())

    async def _updates_agent(self, stream) -> None:
        async for value in stream:
            update = ModelUpdate.decode(value)
            if update is None:
                log.warning("ignoring a models.updates message that is not a ModelUpdate: %.200r", value)
                continue
            await self.swaps.handle(update)

    async def _flush_index(self) -> None:
        await self.calls.run(self.index.flush)

    async def _categorize_popular(self) -> None:
        """Counts of products that arrived after their first purchase or cart get the product's category."""
        await self.calls.run(self.popularity.categorize, self.targets.models()[0].products)
