"""The swap coordinator: builds a candidate version's collections and makes it active, across every stream
worker of the consumer group (one or many; faust assigns each partition of the source topics, and of the
user-history changelog with them, to exactly one worker).

One worker leads a swap: the owner of the models.updates partition (one partition, so one owner; faust
commits a message only after its agent has handled it, so when the leader stops mid-backfill the request
is redelivered to the next owner). Every step of the swap is recorded in the swap journal on the swap
control topic (streams/journal.py), which every worker follows (:meth:`SwapCoordinator.follow`).

On ``swap_requested`` for version N+1 (cartwise.lifecycle):
1. the leader creates ``products_vN+1`` and ``users_vN+1`` and journals the backfill; every worker that
   reads the journal adds N+1 to its write targets, so every live event it processes from then on is
   written into both versions (dual-write);
2. the leader re-embeds the catalog from its source of truth, the catalog topic from its first offset
   (all partitions), with N+1's encoder in batches, journalling the next offsets after each batch;
3. it journals the users phase: every worker rebuilds the users of the user-keyed partitions it owns:
   those partitions of the user-history changelog read to their end (latest record per key; a tombstone
   is an erasure; a user's record is in the user's source partition) give its users, rebuilt with their
   histories from its Table, and the worker records each partition done on the control topic.
   The owner rebuilds because only a partition's owner writes its users' points (streams/user_points.py
   caches them write-through; a point written by another worker would make that cache wrong). A worker
   assigned a partition mid-phase rebuilds it if nobody has recorded it done;
4. when every partition is recorded done, the leader reads the catalog on from the journal's offsets to
   the end once more (events a worker processed before it saw the journal), then records N+1 and N as live,
   makes N+1 the registry's active version, garbage-collects older versions, drops their collections a
   few seconds later (when every worker has stopped writing them) and announces ``activated`` so every
   API process switches encoder and collections as one pair.

A version already live (the rollback target) skips 1-4: rollback is instant.

A repair runs 2-4 into the active version's own collections (dual-written as ever) and activates nothing:
at start when the index lacks the active version's collections while the broker kept the sources (an index
directory lost, a Qdrant server volume replaced), or on ``repair_requested`` (``cartwise repair``). The quality gate runs in
the trainer before it requests a swap (trainer/cycle.py), so a failed gate never starts one. A crash
or a stop of the leader during 2-4 leaves the registry untouched; the next leader resumes from the journal
(:meth:`SwapCoordinator.resume`, or the redelivered request), and a backfill that cannot be resumed is
abandoned (its collections dropped) at the next start."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping

from aiokafka import TopicPartition

from cartwise.events import InvalidEvent, parse_catalog_event, parse_record
from cartwise.index import GROUPS_SCHEMA, PRODUCTS_SCHEMA, USERS_SCHEMA, VectorIndex
from cartwise.kafka_io import iter_chunks, log_consumer, make_producer, swap_control_topic, tail_consumer
from cartwise.lexical import LexicalEncoder
from cartwise.lifecycle import (ACTIVATED, REPAIR_REQUESTED, SWAP_ABANDONED, SWAP_REQUESTED, ModelUpdate,
                                collection_names, is_version_collection)
from cartwise.personalization import UserHistory
from cartwise.registry import ModelRegistry, RegistryError
from cartwise.settings import Settings
from encoders.bulk import BulkEncoder
from encoders.runtime import ServingModel
from streams.behavior import rebuild_user_vectors
from streams.catalog import write_catalog
from streams.index_calls import IndexCalls
from streams.journal import JOURNAL_KEY, Backfill, ControlState, SwapJournal, read_control, users_done_key
from streams.table_recovery import changelog_values
from streams.targets import WriteTargets
from streams.user_points import UserPoints

log = logging.getLogger(__name__)
USERS_PER_STEP = 32
USERS_PAUSE_S = 0.005  # between steps: one loop turn is not enough for an in-flight Search to finish
PROGRESS_EVERY_S = 2.0
REPAIR_REASON = "repair"  # the Backfill.reason of a repair of the active version
FOLLOW_POLL_MS = 200  # a worker sees a journal change within about this (plus the fetch wait)
PRUNE_DELAY_S = 5.0  # collections of versions no longer live are dropped this long after (module doc, 4)
DONE_POLL_S = 0.1  # how often the leader looks at the users-done records
PUBLISH_TIMEOUT_S = 30.0


class LeadershipLost(Exception):
    """This worker no longer owns the models.updates partition: another one leads (and resumes) the swap."""


@dataclass(frozen=True)
class WorkerHooks:
    """What the coordinator needs from its stream worker (streams/app.py).

    ``announce`` sends a :class:`ModelUpdate` to models.updates; ``ready`` waits until the worker's Tables
    have recovered from their changelogs; ``flush`` waits until the records the worker produced (the
    Table's changelog) are acknowledged; ``owned`` is the set of user-history partitions assigned to the
    worker; ``leads`` whether the worker owns the models.updates partition; ``changelog`` the name of the
    user-history Table's changelog topic; ``partitions`` the partitions of the user-keyed topics."""

    announce: Callable[[ModelUpdate], Awaitable[None]]
    ready: Callable[[], Awaitable[None]]
    flush: Callable[[], Awaitable[None]]
    owned: Callable[[], set[int]]
    leads: Callable[[], bool]
    changelog: str
    partitions: int


def ensure_collections(index: VectorIndex, model: ServingModel) -> None:
    """Create the products, users and text-groups collections of ``model``'s version if missing."""
    index.create_collection(model.products, model.encoder.dims, PRODUCTS_SCHEMA)
    index.create_collection(model.users, model.encoder.dims, USERS_SCHEMA)
    index.create_collection(model.groups, model.encoder.dims, GROUPS_SCHEMA)


class SwapCoordinator:
    """Runs swaps one at a time (module docstring). Its index calls go through ``calls`` (the worker's:
    streams/index_calls.py). ``points`` writes user points (streams/user_points.py),
    ``histories`` is the user-history Table (user_id -> history JSON), ``deleted_at`` the catalog tombstones
    Table (product_id -> deletion time, s), ``lexical`` computes products' BM25 vectors, ``bulk`` embeds the
    catalog (threads shared with the catalog agent, so a backfill and live catalog events together never run
    more encodes than it has threads), ``hooks`` connects it to its worker.

    ``control`` is this worker's view of the swap control topic (updated by :meth:`follow` and by its own
    writes). ``stats`` holds the last backfill's figures: products (catalog events applied), products_s,
    products_per_s, users (rebuilt by this worker), users_s."""

    def __init__(self, settings: Settings, index: VectorIndex, calls: IndexCalls, points: UserPoints,
                 targets: WriteTargets, histories: Mapping, deleted_at: Mapping[str, float], lexical: LexicalEncoder,
                 bulk: BulkEncoder, hooks: WorkerHooks) -> None:
        self.settings, self.index, self.calls, self.points = settings, index, calls, points
        self.targets, self.histories = targets, histories
        self.deleted_at = deleted_at
        self.lexical = lexical
        self.registry = ModelRegistry(settings.models_dir)
        self.hooks = hooks
        self.bulk = bulk
        self.control = ControlState()
        self._follow_from = 0
        self._reacted: SwapJournal | None = None  # the journal the write targets were last set from
        self._rebuilt: dict[str, set[int]] = {}  # attempt -> partitions whose users this worker rebuilt
        self._producer = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._resuming: asyncio.Task | None = None
        self.stats: dict = {}
        self.backfill_progress = 0.0  # the running backfill's fraction of the catalog re-embedded (metrics)

    async def recover(self, active: str, sources_kept: bool = True) -> None:
        """Before the worker consumes: read the journal from the control topic, load the live versions and a
        backfill to resume into the write targets, abandon a backfill that cannot resume, drop every other
        version's collections, and start a repair when the active version was built before (live in the
        journal) but its collections are missing while ``sources_kept`` (the broker kept its topics and
        changelogs). Raises cartwise.registry.RegistryError, kafka.errors.KafkaError."""
        self.control, self._follow_from = await asyncio.to_thread(read_control, self.settings)
        journal = self.control.journal
        live = [active] + [v for v in journal.live if v != active and await self._complete(v)]
        backfill = journal.backfill
        if backfill and not await self._resumable(backfill, active, live):
            log.warning("abandoning the backfill of %s: its collections or model are gone", backfill.version)
            backfill = None
        # only a version built before (live in the journal) can have lost its collections; a new data
        # directory's index is filled by the consumer group's own reading of the topics
        if backfill is None and sources_kept and active in journal.live and not await self._complete(active):
            log.warning("the index lacks the collections of the active version %s: repairing them from Kafka",
                        active)
            backfill = Backfill(version=active, reason=REPAIR_REASON)
        for version in dict.fromkeys(live + ([backfill.version] if backfill else [])):
            await self._add_target(version)
        recovered = SwapJournal(live=live, backfill=backfill)
        if recovered != journal:
            await self._publish([(JOURNAL_KEY, recovered.encode())])
        self._reacted = recovered
        await self._prune(recovered)

    async def _resumable(self, backfill: Backfill, active: str, live: list[str]) -> bool:
        if backfill.reason == REPAIR_REASON:
            return backfill.version == active
        return backfill.version not in live and await self._complete(backfill.version)

    def running(self) -> Backfill | None:
        """The backfill under way (a swap's or a repair's), if any, as this worker last read the journal."""
        return self.control.journal.backfill

    async def resume(self) -> None:
        """Finish the backfill the journal says was running, if this worker leads (:meth:`follow` calls it
        when this worker has become the leader). Stops, journal kept, when another worker takes the lead."""
        await self.hooks.ready()
        async with self._lock:
            backfill = self.control.journal.backfill
            if backfill and self.hooks.leads():
                log.info("resuming the backfill of %s at %s", backfill.version, backfill.phase)
                try:
                    await self._run(self._journal(), backfill.version, backfill.reason)
                except LeadershipLost:
                    log.warning("no longer leading the backfill of %s", backfill.version)

    async def handle(self, update: ModelUpdate) -> None:
        """Act on a models.updates message (this worker leads): a swap or repair request is carried out;
        anything else is ignored. Stops, journal kept, when another worker takes the lead."""
        try:
            await self._handle(update)
        except LeadershipLost:
            log.warning("no longer leading the swap to %s: the next owner of %s resumes it from the journal",
                        update.version, self.settings.topics.models_updates)

    async def _handle(self, update: ModelUpdate) -> None:
        if update.kind == REPAIR_REQUESTED:
            await self._repair()
        if update.kind != SWAP_REQUESTED:
            return
        async with self._lock:
            if update.version == self.registry.active():
                log.info("swap to %s requested: already active", update.version)
                return
            journal = self._journal()
            if journal.backfill and journal.backfill.version != update.version:
                await self._abandon(journal, f"superseded by a request for {update.version}")
            if update.version not in journal.live and journal.backfill is None:
                try:
                    await self._add_target(update.version)
                except RegistryError as err:
                    await self.hooks.announce(ModelUpdate(kind=SWAP_ABANDONED, version=update.version,
                                                          reason=str(err)))
                    return
                journal.backfill = Backfill(version=update.version, reason=update.reason)
                await self._save(journal)
            await self._run(journal, update.version, update.reason)

    async def _repair(self) -> None:
        """Rebuild the active version's collections in place from the sources (after any swap under way)."""
        async with self._lock:
            journal = self._journal()
            journal.backfill = Backfill(version=self.registry.active(), reason=REPAIR_REASON)
            await self._save(journal)
            log.info("repair of %s requested: rebuilding its collections from Kafka", journal.backfill.version)
            await self._run(journal, journal.backfill.version, REPAIR_REASON)

    def _journal(self) -> SwapJournal:
        """A copy of the current journal for the leader to change and :meth:`_save`."""
        return self.control.journal.model_copy(deep=True)

    async def _add_target(self, version: str) -> ServingModel:
        """Load ``version``'s model, create its collections if missing and write every event into them.
        Raises cartwise.registry.RegistryError."""
        model = self.targets.get(version)
        if model is None:
            model = await asyncio.to_thread(ServingModel.load, self.registry, version, self.settings.encoder_threads)
            await self.calls.run(ensure_collections, self.index, model)
            self.targets.add(model)
        return model

    async def _run(self, journal: SwapJournal, version: str, reason: str) -> None:
        """Backfill ``version`` if the journal says it is being built, then activate it (a repair: only
        mark it done). Raises LeadershipLost when another worker takes the lead."""
        if journal.backfill is not None:
            try:
                await self._backfill(journal, await self._add_target(version))
            except LeadershipLost:
                raise
            except Exception as err:  # noqa: BLE001 - any failure abandons the swap, the active version stays
                log.exception("backfill of %s failed", version)
                await self._abandon(journal, f"backfill failed: {err}")
                return
        if reason == REPAIR_REASON:
            journal.backfill = None
            await self._save(journal, self.control.done_keys_other_than(None))
            log.info("repair of %s complete: %s", version, self.stats)
            return
        await self._activate(journal, version, reason)

    async def _backfill(self, journal: SwapJournal, model: ServingModel) -> None:
        await self.hooks.ready()
        if journal.backfill.phase == "products":
            self.stats = {"version": model.version, "products": 0, "products_s": 0.0}
            await self._backfill_products(journal, model)
            journal.backfill.phase = "users"
            await self._save(journal)
        await self._await_users(journal.backfill)
        await self._backfill_products(journal, model)  # the catalog events since the first pass (module doc, 4)
        if hasattr(self.index, "optimize"):  # Qdrant Edge: build the HNSW graph before serving from it
            for collection in (model.groups, model.products):
                await asyncio.to_thread(self.index.optimize, collection)
        seconds = self.stats.get("products_s", 0.0)
        self.stats["products_per_s"] = self.stats.get("products", 0) / seconds if seconds else 0.0

    async def _backfill_products(self, journal: SwapJournal, model: ServingModel) -> None:
        """Re-embed the catalog topic from the journal's offsets to its end into ``model``'s products."""
        backfill, started, applied = journal.backfill, time.perf_counter(), 0
        self.backfill_progress = 0.0
        consumer = await asyncio.to_thread(log_consumer, self.settings)
        chunks = iter_chunks(consumer, self.settings.topics.catalog, backfill.offsets, self.settings.backfill_batch)
        last_report = started
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                records, offsets = chunk
                events = []
                for record in records:
                    try:
                        events.append(parse_record(record.key, record.value, parse_catalog_event,
                                                   self.settings.event_limits))
                    except InvalidEvent:  # the catalog agent dead-letters it; a backfill only skips it
                        continue
                await write_catalog(events, self.index, self.calls, model, self.lexical, self.bulk, self.deleted_at)
                backfill.offsets = offsets
                backfill.products += len(records)
                applied += len(records)
                self.backfill_progress = _read_fraction(consumer, backfill.offsets)
                await self._save(journal)
                if time.perf_counter() - last_report > PROGRESS_EVERY_S:
                    last_report = time.perf_counter()
                    log.info("backfill %s: %d catalog events re-embedded (%.0f/s)", model.products,
                             backfill.products, applied / (last_report - started))
        finally:
            await asyncio.to_thread(consumer.close)
        self.stats["products"] = self.stats.get("products", 0) + applied
        self.stats["products_s"] = self.stats.get("products_s", 0.0) + time.perf_counter() - started

    async def _await_users(self, backfill: Backfill) -> None:
        """Wait until every user-history partition is recorded done for ``backfill``. Raises LeadershipLost."""
        partitions = set(range(self.hooks.partitions))
        while not partitions <= self.control.users_done(backfill.attempt):
            if not self.hooks.leads():
                raise LeadershipLost()
            await asyncio.sleep(DONE_POLL_S)
        log.info("backfill %s: the users of all %d partitions are rebuilt", backfill.version, len(partitions))

    async def _activate(self, journal: SwapJournal, version: str, reason: str) -> None:
        previous = self.registry.active()
        journal.live, journal.backfill = [version, previous], None
        await self._save(journal, self.control.done_keys_other_than(None))
        self.registry.activate(version)
        self.targets.keep_only(set(journal.live))
        removed = self.registry.collect_garbage(keep_retired=1)
        self._prune_later()
        log.info("activated %s (previous %s kept for rollback; removed %s)", version, previous, removed or "none")
        await self.hooks.announce(ModelUpdate(kind=ACTIVATED, version=version, previous=previous, reason=reason))

    async def _abandon(self, journal: SwapJournal, reason: str) -> None:
        version = journal.backfill.version
        journal.backfill = None
        await self._save(journal, self.control.done_keys_other_than(None))
        self.targets.keep_only(set(journal.live))
        self._prune_later()
        await self.hooks.announce(ModelUpdate(kind=SWAP_ABANDONED, version=version, reason=reason))

    async def _save(self, journal: SwapJournal, removed: list[bytes] = ()) -> None:
        """Write ``journal`` (and tombstones for ``removed`` keys) to the control topic as the leader.
        Raises LeadershipLost when this worker no longer leads: the journal is then the next leader's."""
        if not self.hooks.leads():
            raise LeadershipLost()
        await self._publish([(key, None) for key in removed] + [(JOURNAL_KEY, journal.encode())])

    async def _publish(self, records: list[tuple[bytes, bytes | None]]) -> None:
        """Send ``records`` to the control topic, wait for the broker's acks, and fold them into ``control``
        (the follower reads them again; folding is idempotent). Raises kafka.errors.KafkaError."""
        def send() -> None:
            if self._producer is None:
                self._producer = make_producer(self.settings)
            topic = swap_control_topic(self.settings)
            for future in [self._producer.send(topic, key=key, value=value, partition=0) for key, value in records]:
                future.get(PUBLISH_TIMEOUT_S)

        await asyncio.to_thread(send)
        for key, value in records:
            self.control.apply(key, value)

    async def follow(self) -> None:
        """Follow the control topic from where :meth:`recover` read it to, and act on each journal change as
        every worker does (module doc): write into the versions it names, rebuild the users of this worker's
        partitions in the users phase, and resume the backfill when this worker has become its leader. Runs
        until cancelled."""
        consumer = tail_consumer(self.settings)
        await consumer.start()
        try:
            tp = TopicPartition(swap_control_topic(self.settings), 0)
            consumer.assign([tp])
            consumer.seek(tp, self._follow_from)
            while True:
                batches = await consumer.getmany(timeout_ms=FOLLOW_POLL_MS)
                for record in (r for batch in batches.values() for r in batch):
                    self.control.apply(record.key, record.value)
                try:
                    await self._react()
                except Exception:  # noqa: BLE001 - logged; the next journal change or poll tries again
                    log.exception("acting on the swap journal failed")
        finally:
            await consumer.stop()

    async def _react(self) -> None:
        journal = self.control.journal
        backfill = journal.backfill
        versions = journal.live + ([backfill.version] if backfill else [])
        for version in versions:
            if self.targets.get(version) is None and self.registry.path(version).is_dir():
                await self._add_target(version)
        if journal != self._reacted:  # only on a change: the leader adds a target just before journalling it
            self._reacted = journal
            self.targets.keep_only(set(versions))
        if backfill and backfill.phase == "users":
            await self._rebuild_own_users(backfill)
        if backfill and not self._lock.locked() and self.hooks.leads() and self._resuming is None:
            self._resuming = self._spawn(self.resume())
            self._resuming.add_done_callback(lambda _: setattr(self, "_resuming", None))

    async def _rebuild_own_users(self, backfill: Backfill) -> None:
        """Rebuild, into ``backfill``'s users collection, the users of the user-history partitions this
        worker owns that nobody has recorded done, and record them done (module doc, 3)."""
        model = self.targets.get(backfill.version)
        mine = self._rebuilt.setdefault(backfill.attempt, set())
        todo = self.hooks.owned() - self.control.users_done(backfill.attempt) - mine
        if model is None or not todo:
            return
        await self.hooks.ready()
        await self.hooks.flush()  # every history this worker has written is in the changelog it reads now
        started = time.perf_counter()
        # a user's changelog record is in the user's source partition (streams/faust_hooks.py, RawKeyTable)
        newest = await asyncio.to_thread(changelog_values, self.settings, self.hooks.changelog, dict.fromkeys(todo, 0))
        user_ids = [user_id for user_id, value in newest.items() if value is not None]
        for i in range(0, len(user_ids), USERS_PER_STEP):
            if not todo <= self.hooks.owned():
                log.info("partitions %s were reassigned mid-rebuild: their new owner rebuilds them", sorted(todo))
                return
            # Read and write one step without yielding, so a behavior batch lands before or after it.
            histories = {u: UserHistory.from_json(h) for u in user_ids[i:i + USERS_PER_STEP]
                         if (h := self.histories.get(u)) is not None}  # None: erased since the read
            await self.calls.run(rebuild_user_vectors, histories, self.index, self.points, model.products,
                                 model.users, self.settings.personalization)
            await asyncio.sleep(USERS_PAUSE_S)
        await self._publish([(users_done_key(backfill.attempt, p), b"1") for p in sorted(todo)])
        mine |= todo
        self.stats["users"] = self.stats.get("users", 0) + len(user_ids)
        self.stats["users_s"] = self.stats.get("users_s", 0.0) + time.perf_counter() - started
        log.info("backfill %s: %d user vectors of partitions %s rebuilt", model.users, len(user_ids), sorted(todo))

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _prune_later(self) -> None:
        async def prune() -> None:
            await asyncio.sleep(PRUNE_DELAY_S)
            await self._prune(self.control.journal)

        self._spawn(prune())

    async def close(self) -> None:
        """Cancel background work (a pending prune, a resume) and close the control producer."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close)

    async def _complete(self, version: str) -> bool:
        return self.registry.path(version).is_dir() and await self.calls.run(
            lambda: all(map(self.index.has_collection, collection_names(version))))

    async def _prune(self, journal: SwapJournal) -> None:
        versions = journal.live + ([journal.backfill.version] if journal.backfill else [])
        keep = {name for version in versions for name in collection_names(version)}
        for name in await self.calls.run(self.index.collections):
            if is_version_collection(name) and name not in keep:
                log.info("dropping %s (version no longer live)", name)
                await self.calls.run(self.index.drop_collection, name)


def _read_fraction(consumer, offsets: dict[int, int]) -> float:
    """How much of the assigned partitions ``consumer`` has read up to ``offsets`` (partition -> next offset),
    0..1, from the high watermarks its last fetches reported (no broker round trip); 0.0 while unknown."""
    ends = {tp.partition: consumer.highwater(tp) for tp in consumer.assignment()}
    total = sum(end for end in ends.values() if end)
    return min(1.0, sum(offsets.get(p, 0) for p, end in ends.items() if end) / total) if total else 0.0
