"""The faust app: a catalog agent, a behavior agent over the three behavior topics, the user-history
Table (changelog in Kafka), dead-lettering of invalid events, a retry timer for users whose products
were not in the catalog yet, and the models.updates agent that drives model swaps (streams/swap.py).

Every event is written into each of the write targets (streams/targets.py): the active version, the
rollback target, and during a swap the version being backfilled."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

import faust

from functools import partial

from cartwise.events import (
    BehaviorEvent,
    InvalidEvent,
    parse_behavior_event,
    parse_catalog_event,
    parse_control_event,
    parse_record,
)
from cartwise.index import VectorIndex
from cartwise.kafka_io import idempotent, kafka_ssl_context
from cartwise.lexical import LexicalEncoder
from cartwise.lifecycle import ModelUpdate
from cartwise.personalization import UserHistory
from cartwise.settings import Settings
from encoders.bulk import BulkEncoder
from streams.behavior import DecodedHistories, UserUpdate, rebuild_user_vectors, update_user_vectors
from streams.catalog import record_deletions, write_catalog
from streams.changelog import TableBatch
from streams.erasure import StreamClock, delete_user_points, forget_histories
from streams.event_ages import EventAges
from streams.index_calls import IndexCalls
from streams.indexing import ProductIndexing
from streams.legacy_changelogs import migrate_changelogs
from streams.swap import REPAIR_REASON, SwapCoordinator, WorkerHooks
from streams.table_recovery import complete_recovery_of
from streams.table_store import LocalStore, collector_paused
from streams.popularity import PopularityCounts
from streams.user_points import UserPoints
from streams.targets import WriteTargets
from streams.transport import FastPollApp

log = logging.getLogger(__name__)

HISTORY_TABLE = "user_histories"  # user_id -> history; changelog ``{app_id}-user_histories-changelog``
TOMBSTONE_TABLE = "product_tombstones"  # product_id -> event time (s) of its newest deletion
LEGACY_TABLES = {"user_history": HISTORY_TABLE, "catalog_tombstones": TOMBSTONE_TABLE}  # old name -> new
_EVENT_TYPE_OF_TOPIC_FIELD = {"purchases": "purchase", "carts": "cart", "views": "view"}
_NEVER = 2**62  # faust's broker_commit_every: commit by the timer only
INDEX_FLUSH_S = 15.0  # Qdrant Edge's write-ahead log is cut back to its flushed segments this often
CHANGELOG_BATCH_BYTES = 512 * 1024  # under Kafka's and aiokafka's 1 MB request limit


class RawKeyTable(faust.Table):
    """A faust Table whose str keys are written as their UTF-8 bytes, as the source topics' keys are: the
    producer's partitioner then puts a key's changelog record in the partition of its source events, the
    changelog partition faust restores to the worker that owns them. faust's own choice for str keys is
    JSON (``"123"``, quotes included), which hashes elsewhere (streams/legacy_changelogs.py).

    Its store is streams/table_store.py's, mirrored on disk under ``directory`` (None: in memory only);
    changelog records faust itself sends (``table[key] = value``) reach the mirror once acknowledged."""

    def __init__(self, *args, directory: Path | None = None, **kwargs) -> None:
        self.directory = directory
        super().__init__(*args, **kwargs)

    def _serializer_from_type(self, typ):
        return "raw" if typ is str else super()._serializer_from_type(typ)

    def _new_store(self) -> LocalStore:
        return LocalStore("memory://", self.app, self, table_name=self.name, key_type=self.key_type,
                          key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                          value_type=self.value_type, loop=self.loop, options=self.options, directory=self.directory)

    def _on_changelog_sent(self, fut) -> None:
        sent = fut.result()
        self.data.acknowledged(sent.partition, [(fut.message.key, fut.message.value)], sent.offset)


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """faust's credentials for the broker's security (cartwise/kafka_io.py: the same protocol, SASL login
    and TLS context as every other client), or None for plaintext. Raises OSError for an unreadable TLS file."""
    protocol = "PLAINTEXT" if settings.embedded_broker else settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol.startswith("SASL"):  # faust derives SASL_SSL from the presence of a context
        return faust.SASLCredentials(username=settings.kafka_sasl_username, mechanism=settings.kafka_sasl_mechanism,
                                     password=settings.kafka_sasl_password.get_secret_value(), ssl_context=context)
    return faust.SSLCredentials(context) if context is not None else None


class StreamWorker:
    """Stream processing for one process: owns the faust app and the swap coordinator (``swaps``); writes
    into the collections of every write target. ``await worker.start(active)`` with the registry's
    active version, ``await worker.stop()``.

    Counters (events since start, counted once whatever the number of targets): ``applied`` (erasure
    requests included), ``dead_lettered``, ``stale``; users ``forgotten`` (erasure requests applied) and
    ``expired`` (by the TTL in stream time, ``clock``); ``events_by_topic``: (topic, outcome) -> events,
    outcome applied, stale or dead_lettered (the metrics, cartwise/metrics.py)."""

    def __init__(self, settings: Settings, index: VectorIndex) -> None:
        self.settings, self.index, self.targets = settings, index, WriteTargets()
        self.calls = IndexCalls(index.remote)  # every index call of the worker goes through it
        self.points = UserPoints(index, settings.user_cache_size)
        self.decoded = DecodedHistories(settings.user_cache_size)
        self.popularity = PopularityCounts(index, settings.personalization, settings.popularity_half_life_s)
        self.applied = self.dead_lettered = self.stale = self.forgotten = self.expired = 0
        self.event_ages = EventAges()  # the freshness breakdown per stage (streams/event_ages.py)
        self.events_by_topic: Counter[tuple[str, str]] = Counter()
        self.clock = StreamClock(settings.user_ttl_s)
        self._pending_users: set[str] = set()
        self._catalog_changed = False
        self._catalog_sizes: tuple[int, ...] = ()  # of the targets' products collections at the last retry
        self._dead_letter_topics: dict[str, faust.TopicT] = {}
        self.bulk = BulkEncoder(settings.bulk_encode_threads)  # the catalog agent's and the backfill's
        topics = settings.topics
        self._parser_of_topic = {getattr(topics, f): partial(parse_behavior_event, expected_type=t)
                                 for f, t in _EVENT_TYPE_OF_TOPIC_FIELD.items()}
        self._parser_of_topic[topics.user_control] = parse_control_event
        self.app = FastPollApp(
            settings.app_id, broker=f"kafka://{settings.bootstrap}", store="memory://", web_enabled=False,
            datadir=settings.data_dir / "faust",  # faust's default is the working directory
            topic_partitions=settings.partitions, fetch_max_wait_ms=settings.fetch_max_wait_ms,
            idempotent_producer=idempotent(settings), consumer_auto_offset_reset="earliest",
            producer_acks=-1 if not settings.embedded_broker else 1, stream_wait_empty=False,
            producer_linger=settings.producer_linger_ms / 1000,
            broker_session_timeout=settings.consumer_session_timeout_s,
            broker_rebalance_timeout=settings.consumer_session_timeout_s,
            broker_credentials=broker_credentials(settings),
            # faust also commits every broker_commit_every events from inside its intake loop, and a commit first
            # waits for every changelog send to be acknowledged: with full histories (kilobytes per user
            # update) intake stopped for seconds every 10,000 events and the worker fell behind for good at
            # 1,000 events/s (issue #28's soak). The commit timer (broker_commit_interval) commits from a task
            # of its own, with the same flush first, while intake goes on.
            broker_commit_every=_NEVER,
            # a record batch of the changelog holds this much (aiokafka's default, 16 KB, held three full histories,
            # and aiokafka sends a partition's batches one at a time: the changelog took 200 records/s)
            producer_max_batch_size=CHANGELOG_BATCH_BYTES,
            # faust refuses a persisted offset beyond the changelog's listed end, which the embedded broker
            # lists stale; streams/table_recovery.py checks it against the true end instead
            recovery_consistency_check=False,
        )
        self.catalog_topic = self.app.topic(topics.catalog, key_type=bytes, value_type=bytes, value_serializer="raw")
        self.behavior_topics = self.app.topic(*topics.user_keyed, key_type=bytes, value_type=bytes,
                                              value_serializer="raw")
        self.histories = self._table(HISTORY_TABLE)
        self.tombstones = self._table(TOMBSTONE_TABLE)  # streams/catalog.py
        complete_recovery_of(self.histories, settings, then=self._on_histories_recovered)
        complete_recovery_of(self.tombstones, settings)
        self.updates_topic = self.app.topic(topics.models_updates, key_type=bytes, value_type=bytes,
                                            value_serializer="raw")
        self.lexical = LexicalEncoder(settings.lexical)
        hooks = WorkerHooks(announce=self._announce, ready=self._table_recovered, flush=self._flush,
                            owned=self._owned_history_partitions, leads=self._leads,
                            changelog=self.histories.changelog_topic.get_topic_name(), partitions=settings.partitions)
        self.swaps = SwapCoordinator(settings, index, self.calls, self.points, self.targets, self.histories,
                                     self.tombstones, self.lexical, self.bulk, hooks)
        self.app.agent(self.catalog_topic, name="catalog")(self._catalog_agent)
        self.app.agent(self.behavior_topics, name="behavior")(self._behavior_agent)
        self.app.agent(self.updates_topic, name="model-updates")(self._updates_agent)
        self.app.timer(1.0)(self._retry_pending)
        self.app.timer(1.0)(self._categorize_popular)
        self.indexing = ProductIndexing(index, settings.optimize_quiet_s, settings.optimize_after_upserts)
        self.app.timer(1.0)(self.indexing.tick)
        if hasattr(index, "flush"):  # Qdrant Edge (cartwise/index/edge.py); a Qdrant server flushes by itself
            self.app.timer(INDEX_FLUSH_S)(self._flush_index)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self._follow: asyncio.Task | None = None

    def _table(self, name: str) -> faust.Table:
        # use_partitioner: batches (take_events) write outside per-event context
        table = RawKeyTable(self.app, name=name, default=None, beacon=self.app.tables.beacon,
                            partitions=self.settings.partitions, use_partitioner=True, key_type=str,
                            directory=self.settings.tables_dir)
        return self.app.tables.add(table)

    @property
    def consumed(self) -> int:
        """Events consumed since start: applied + stale + dead-lettered."""
        return self.applied + self.stale + self.dead_lettered

    def status(self) -> dict:
        """The counters since start, stream time (s since the epoch), and the backfill under way: the
        version being built by a swap or a repair (empty when none) and whether it is a repair."""
        backfill = self.swaps.running()
        return {"applied": self.applied, "dead_lettered": self.dead_lettered, "stale": self.stale,
                "forgotten": self.forgotten, "expired": self.expired, "stream_time": self.clock.now,
                "backfill_version": backfill.version if backfill else "",
                "repair_running": bool(backfill and backfill.reason == REPAIR_REASON)}

    async def start(self, active: str, sources_kept: bool = True) -> None:
        """Recover the write targets from the swap journal (``active``: the registry's active version),
        follow the swap control topic (streams/swap.py: this worker resumes an interrupted backfill when it
        leads, or starts a repair when the index lacks the active version's collections and
        ``sources_kept``, the broker kept its topics) and start consuming (joins the consumer group,
        recovers the Tables from their changelogs, first moving an earlier release's:
        streams/legacy_changelogs.py). Raises cartwise.registry.RegistryError, kafka.errors.KafkaError."""
        await asyncio.to_thread(migrate_changelogs, self.settings, LEGACY_TABLES)
        await self.swaps.recover(active, sources_kept)
        await self.calls.run(self.popularity.ensure_collection)
        for model in self.targets.models():  # written before a restart, maybe never optimized (a no-op if done)
            if await self.calls.run(self.index.has_collection, model.products):
                self.indexing.wrote(model.products, 1)
        self._follow = asyncio.create_task(self.swaps.follow())
        await self.app.start()

    async def _on_histories_recovered(self) -> None:
        """After a restart (before the streams resume) the in-memory state derived from the Table is gone:
        the stream clock is rebuilt from the histories, and the set of users the retry timer rebuilds from
        their stored points: a vector that lacks a product that had not arrived (a user with a history but
        no point has no known product yet), and a point that does not carry its history's digest (the
        history outran the vector, and no redelivered batch will touch that user again: a CI run of the
        recovery test found one such user in 1,500 rows and three kills)."""
        with collector_paused():  # 200,000 histories decoded in 15 s with the collector running, 3 s without
            histories = {u: UserHistory.from_json(h) for u, h in self.histories.items()}
            self.clock.restore(histories.items())
        users = list(histories)
        for model in self.targets.models():
            for start in range(0, len(users), 512):
                chunk = users[start:start + 512]
                points = await self.calls.run(self.points.get, model.users, chunk)
                self._pending_users.update(u for u in chunk if u not in points or points[u].state.pending
                                           or points[u].history != histories[u].digest())
        self._catalog_changed = bool(self._pending_users)
        log.info("%d users to rebuild after recovery (waiting for products, or behind their history)",
                 len(self._pending_users))

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

    def _assignment(self) -> set:
        """The topic partitions assigned to this worker (none before the consumer has joined the group)."""
        consumer = self.app._consumer  # not the property: that would create one before the app starts
        return set(consumer.assignment()) if consumer is not None and consumer.started else set()

    def _owned_history_partitions(self) -> set[int]:
        """The user-history partitions this worker owns: those of the user-keyed source topics it is assigned
        (faust assigns co-partitioned topics, and the Table's changelog, partition by partition)."""
        return {tp.partition for tp in self._assignment() if tp.topic == self.settings.topics.purchases}

    def _leads(self) -> bool:
        """Whether this worker owns the models.updates partition, and so leads swaps (streams/swap.py)."""
        return any(tp.topic == self.settings.topics.models_updates for tp in self._assignment())

    async def _announce(self, update: ModelUpdate) -> None:
        await self.updates_topic.send(key=update.version.encode(), value=update.encode())

    async def _updates_agent(self, stream) -> None:
        async for value in stream:
            update = ModelUpdate.decode(value)
            if update is None:
                log.warning("ignoring a models.updates message that is not a ModelUpdate: %.200r", value)
                continue
            await self.swaps.handle(update)

    async def _dead_letter(self, event, reason: str) -> None:
        message = event.message
        log.warning("dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        name = self.settings.topics.dead_letter(message.topic)
        dlq = self._dead_letter_topics.get(name) or self._dead_letter_topics.setdefault(
            name, self.app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw"))
        # the producer's own headers are kept: a dead letter must carry everything needed to resend it
        headers = list(message.headers.items() if isinstance(message.headers, dict) else message.headers or [])
        headers += [("error", reason.encode()), ("source_topic", message.topic.encode()),
                    ("source_partition", str(message.partition).encode()),
                    ("source_offset", str(message.offset).encode())]
        await dlq.send(key=message.key, value=message.value, headers=headers)
        self.dead_lettered += 1
        self.events_by_topic[message.topic, "dead_lettered"] += 1

    async def _catalog_agent(self, stream) -> None:
        async for batch in stream.take_events(self.settings.catalog_batch, within=self.settings.catalog_batch_window_s):
            stamps = [event.message.timestamp for event in batch]
            self.event_ages.observe("catalog", "batched", stamps)
            parsed = []
            for event in batch:
                try:
                    parsed.append(parse_record(event.key, event.value, parse_catalog_event, self.settings.event_limits))
                except InvalidEvent as err:
                    await self._dead_letter(event, err.reason)
            if parsed:
                await self._apply_catalog(parsed)
            self.event_ages.observe("catalog", "applied", stamps)

    async def _apply_catalog(self, events) -> None:
        backfill = self.swaps.running()
        for model in self.targets.models():
            plan = await write_catalog(events, self.index, self.calls, model, self.lexical, self.bulk, self.tombstones)
            if not (backfill and backfill.version == model.version):  # a backfill optimizes its own at its end
                self.indexing.wrote(model.products, len(plan.upserts))
        record_deletions(events, self.tombstones)
        # applied + stale = len(events) in every target's plan: count the events once
        self.applied += len(plan.upserts) + len(plan.deletes)
        self.stale += plan.stale
        self.events_by_topic[self.settings.topics.catalog, "applied"] += len(plan.upserts) + len(plan.deletes)
        self.events_by_topic[self.settings.topics.catalog, "stale"] += plan.stale
        self._catalog_changed = True

    async def _behavior_agent(self, stream) -> None:
        async for batch in stream.take_events(self.settings.behavior_batch, within=self.settings.behavior_batch_window_s):
            stamps = [event.message.timestamp for event in batch]
            self.event_ages.observe("behavior", "batched", stamps)
            updates: dict[str, UserUpdate] = {}
            forgets: set[str] = set()
            for event in batch:
                try:
                    parsed = parse_record(event.key, event.value, self._parser_of_topic[event.message.topic],
                                          self.settings.event_limits)
                except InvalidEvent as err:
                    await self._dead_letter(event, err.reason)
                    continue
                if isinstance(parsed, BehaviorEvent):
                    outcome = self._add_behavior(parsed, updates, forgets)
                    if outcome == "applied":
                        self.popularity.add(parsed, event.message.partition)
                else:  # an erasure request: the user's earlier events in this batch go with the rest
                    updates.pop(parsed.user_id, None)
                    forgets.add(parsed.user_id)
                    self.applied += 1
                    outcome = "applied"
                self.events_by_topic[event.message.topic, outcome] += 1
            self.forgotten += await self._remove_users(list(forgets))
            await self._write_users(updates)
            self.event_ages.observe("behavior", "applied", stamps)
            await self.calls.run(self.popularity.write, self.targets.models()[0].products)
            self.expired += await self._remove_users(self.clock.expired())

    def _add_behavior(self, event: BehaviorEvent, updates: dict[str, UserUpdate], forgets: set[str]) -> str:
        """Apply ``event`` to its user's update in this batch (started from the Table, or from nothing when
        the user was forgotten earlier in the batch). Returns the outcome, "applied" or "stale"."""
        update = updates.get(event.user_id)
        if update is None:
            stored = None if event.user_id in forgets else self.histories.get(event.user_id)
            update = updates[event.user_id] = UserUpdate.of(self.decoded.take(event.user_id, stored))
        self.clock.saw(event.user_id, event.event_time.timestamp())
        if update.history.apply(event, self.settings.personalization.max_history):
            self.applied += 1
            return "applied"
        self.stale += 1
        return "stale"

    async def _write_users(self, updates: dict[str, UserUpdate]) -> None:
        # The Table first: a crash before the vectors are written leaves points whose digest lags the
        # history, which the redelivered batch repairs (streams/behavior.py).
        histories, written = TableBatch(self.histories), {}
        for user_id, update in updates.items():
            if update.history.digest() != update.before:
                histories[user_id] = written[user_id] = update.history.to_json()
        histories.flush()
        for user_id, value in written.items():
            self.decoded.put(user_id, value, updates[user_id].history)
        if updates:
            pending = await self.calls.run(self._update_vectors, updates, self.targets.models())
            self._track_pending(updates.keys(), pending)

    def _update_vectors(self, updates: dict[str, UserUpdate], models) -> set[str]:
        """streams/behavior.update_user_vectors in every write target; the users still waiting on a product."""
        return set().union(*(update_user_vectors(updates, self.index, self.points, m.products, m.users,
                                                 self.settings.personalization) for m in models))

    async def _remove_users(self, user_ids: list[str]) -> int:
        """Erase or expire ``user_ids`` everywhere (streams/erasure.py); returns how many there were."""
        if user_ids:
            await self.calls.run(delete_user_points, user_ids, self.points, self.targets.models())
            histories = TableBatch(self.histories)
            forget_histories(user_ids, histories)
            histories.flush()
            self.decoded.discard(user_ids)
            self.clock.forget(user_ids)
            self._pending_users.difference_update(user_ids)
            log.info("removed %d users (erasure or expiry)", len(user_ids))
        return len(user_ids)

    def _track_pending(self, users, pending: set[str]) -> None:
        self._pending_users.difference_update(set(users) - pending)
        self._pending_users.update(pending)

    async def _flush_index(self) -> None:
        await self.calls.run(self.index.flush)

    async def _categorize_popular(self) -> None:
        """Counts of products that arrived after their first purchase or cart get the product's category."""
        await self.calls.run(self.popularity.categorize, self.targets.models()[0].products)

    async def _retry_pending(self) -> None:
        """Users whose products were missing get their vectors rebuilt once the catalog has changed: through
        this worker's catalog agent, or another worker's (with several workers a user's product can arrive
        on a catalog partition another worker owns; the products collections' sizes then change)."""
        if not self._pending_users:
            return
        models = self.targets.models()
        sizes = await self.calls.run(lambda: tuple(self.index.count(m.products) for m in models))
        if not (self._catalog_changed or sizes != self._catalog_sizes):
            return
        self._catalog_changed, self._catalog_sizes = False, sizes
        histories = {u: UserHistory.from_json(self.histories.get(u)) for u in list(self._pending_users)}
        self._track_pending(histories, await self.calls.run(self._rebuild_vectors, histories, models))

    def _rebuild_vectors(self, histories: dict[str, UserHistory], models) -> set[str]:
        """streams/behavior.rebuild_user_vectors in every write target; the users still waiting on a product."""
        return set().union(*(rebuild_user_vectors(histories, self.index, self.points, m.products, m.users,
                                                  self.settings.personalization) for m in models))
