"""The swap coordinator: builds a candidate version's collections and makes it active, in the stream
worker (the one process that writes the index).

On ``swap_requested`` for version N+1 (cartwise.model_updates):
1. create ``products_vN+1`` and ``users_vN+1`` and add N+1 to the worker's write targets, so every live
   event from now on is written into both versions (dual-write);
2. re-embed the catalog from its source of truth, the catalog topic from its first offset, with N+1's
   encoder in batches (the journal records the next offset after each batch);
3. rebuild every user vector from the durable user histories (the faust Table, changelog in Kafka);
4. record N+1 and N as live in the journal, make N+1 the registry's active version, garbage-collect
   older versions and drop their collections, and announce ``activated`` so every API process
   switches encoder and collections as one pair.

A version already live (the rollback target) skips 1-3: rollback is instant.

A repair runs 2-3 into the active version's own collections (dual-written as ever) and activates nothing:
at start when the index lacks the active version's collections while the broker kept the sources (an index
directory lost, a Qdrant server volume replaced), or on ``repair_requested`` (``cartwise repair``). The quality gate runs in
the trainer before it requests a swap (trainer/cycle.py), so a failed gate never starts one. A crash
during 2-3 leaves the registry untouched; on restart :meth:`SwapCoordinator.recover` resumes from the
journal, or abandons the backfill (dropping its collections) when it cannot be resumed."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Awaitable, Callable, Mapping

from cartwise.events import InvalidEvent, parse_catalog_event, parse_record
from cartwise.index import PRODUCTS_SCHEMA, USERS_SCHEMA, VectorIndex
from cartwise.kafka_io import iter_chunks, log_consumer
from cartwise.lexical import LexicalEncoder
from cartwise.model_updates import ACTIVATED, REPAIR_REQUESTED, SWAP_ABANDONED, SWAP_REQUESTED, ModelUpdate
from cartwise.personalization import UserHistory
from cartwise.registry import ModelRegistry, RegistryError, collection_names
from cartwise.settings import Settings
from encoders.bulk import BulkEncoder
from encoders.runtime import ServingModel
from streams.behavior import rebuild_user_vectors
from streams.user_points import UserPoints
from streams.catalog import write_catalog
from streams.journal import Backfill, SwapJournal
from streams.targets import WriteTargets

log = logging.getLogger(__name__)
_COLLECTION_RE = re.compile(r"^(products|users)_v\d+$")  # the collections of some version
USERS_PER_STEP = 32
USERS_PAUSE_S = 0.005  # between steps: one loop turn is not enough for an in-flight Search to finish
PROGRESS_EVERY_S = 2.0
REPAIR_REASON = "repair"  # the Backfill.reason of a repair of the active version


def ensure_collections(index: VectorIndex, model: ServingModel) -> None:
    """Create the products and users collections of ``model``'s version if missing."""
    index.create_collection(model.products, model.encoder.dims, PRODUCTS_SCHEMA)
    index.create_collection(model.users, model.encoder.dims, USERS_SCHEMA)


class SwapCoordinator:
    """Runs swaps one at a time (module docstring). ``points`` writes user points (streams/user_points.py),
    ``histories`` is the user-history Table (user_id ->
    history JSON), ``deleted_at`` the catalog tombstones Table (product_id -> deletion time, s), ``lexical``
    computes products' BM25 vectors, ``bulk`` embeds the catalog (threads shared with the catalog agent, so a
    backfill and live catalog events together never run more encodes than it has threads), ``announce`` sends a :class:`ModelUpdate` to models.updates, ``ready`` waits
    until the worker's Table has recovered from its changelog.

    ``stats`` holds the last backfill's figures: products (catalog events applied), products_s,
    products_per_s, users, users_s."""

    def __init__(self, settings: Settings, index: VectorIndex, points: UserPoints, targets: WriteTargets,
                 histories: Mapping, deleted_at: Mapping[str, float], lexical: LexicalEncoder, bulk: BulkEncoder,
                 announce: Callable[[ModelUpdate], Awaitable[None]], ready: Callable[[], Awaitable[None]]) -> None:
        self.settings, self.index, self.points = settings, index, points
        self.targets, self.histories = targets, histories
        self.deleted_at = deleted_at
        self.lexical = lexical
        self.registry = ModelRegistry(settings.models_dir)
        self.journal_path = settings.data_dir / "swap.json"
        self._announce, self._ready = announce, ready
        self.bulk = bulk
        self._lock = asyncio.Lock()
        self.stats: dict = {}
        self.backfill_progress = 0.0  # the running backfill's fraction of the catalog re-embedded (metrics)

    def recover(self, active: str, sources_kept: bool = True) -> None:
        """Before the worker consumes: load the live versions and a backfill to resume into the write
        targets, abandon a backfill that cannot resume, drop every other version's collections, and start
        a repair when the active version was built before (live in the journal) but its collections are
        missing while ``sources_kept`` (the broker kept its topics and changelogs)."""
        journal = SwapJournal.load(self.journal_path)
        live = [active] + [v for v in journal.live if v != active and self._complete(v)]
        backfill = journal.backfill
        if backfill and not self._resumable(backfill, active, live):
            log.warning("abandoning the backfill of %s: its collections or model are gone", backfill.version)
            backfill = None
        # only a version built before (live in the journal) can have lost its collections; a new data
        # directory's index is filled by the consumer group's own reading of the topics
        if backfill is None and sources_kept and active in journal.live and not self._complete(active):
            log.warning("the index lacks the collections of the active version %s: repairing them from Kafka",
                        active)
            backfill = Backfill(version=active, reason=REPAIR_REASON)
        for version in dict.fromkeys(live + ([backfill.version] if backfill else [])):
            model = ServingModel.load(self.registry, version, self.settings.encoder_threads)
            ensure_collections(self.index, model)
            self.targets.add(model)
        journal = SwapJournal(live=live, backfill=backfill)
        journal.save(self.journal_path)
        self._prune(journal)

    def _resumable(self, backfill: Backfill, active: str, live: list[str]) -> bool:
        if backfill.reason == REPAIR_REASON:
            return backfill.version == active
        return backfill.version not in live and self._complete(backfill.version)

    def running(self) -> Backfill | None:
        """The backfill under way (a swap's or a repair's), if any."""
        return SwapJournal.load(self.journal_path).backfill

    async def resume(self) -> None:
        """Finish the backfill the journal says was running (after the worker has started)."""
        async with self._lock:
            journal = SwapJournal.load(self.journal_path)
            if journal.backfill:
                log.info("resuming the backfill of %s at %s", journal.backfill.version, journal.backfill.phase)
                await self._run(journal, journal.backfill.version, journal.backfill.reason)

    async def handle(self, update: ModelUpdate) -> None:
        """Act on a models.updates message: a swap or repair request is carried out; anything else is ignored."""
        if update.kind == REPAIR_REQUESTED:
            await self._repair()
        if update.kind != SWAP_REQUESTED:
            return
        async with self._lock:
            if update.version == self.registry.active():
                log.info("swap to %s requested: already active", update.version)
                return
            journal = SwapJournal.load(self.journal_path)
            if journal.backfill and journal.backfill.version != update.version:
                await self._abandon(journal, f"superseded by a request for {update.version}")
            if update.version not in journal.live and journal.backfill is None:
                try:
                    model = await asyncio.to_thread(ServingModel.load, self.registry, update.version,
                                                    self.settings.encoder_threads)
                except RegistryError as err:
                    await self._announce(ModelUpdate(kind=SWAP_ABANDONED, version=update.version, reason=str(err)))
                    return
                ensure_collections(self.index, model)
                self.targets.add(model)
                journal.backfill = Backfill(version=update.version, reason=update.reason)
                journal.save(self.journal_path)
            await self._run(journal, update.version, update.reason)

    async def _repair(self) -> None:
        """Rebuild the active version's collections in place from the sources (after any swap under way)."""
        async with self._lock:
            journal = SwapJournal.load(self.journal_path)
            journal.backfill = Backfill(version=self.registry.active(), reason=REPAIR_REASON)
            journal.save(self.journal_path)
            log.info("repair of %s requested: rebuilding its collections from Kafka", journal.backfill.version)
            await self._run(journal, journal.backfill.version, REPAIR_REASON)

    async def _run(self, journal: SwapJournal, version: str, reason: str) -> None:
        """Backfill ``version`` if the journal says it is being built, then activate it (a repair: only
        mark it done)."""
        if journal.backfill is not None:
            try:
                await self._backfill(journal, self.targets.get(version))
            except Exception as err:  # noqa: BLE001 - any failure abandons the swap, the active version stays
                log.exception("backfill of %s failed", version)
                await self._abandon(journal, f"backfill failed: {err}")
                return
        if reason == REPAIR_REASON:
            journal.backfill = None
            journal.save(self.journal_path)
            log.info("repair of %s complete: %s", version, self.stats)
            return
        await self._activate(journal, version, reason)

    async def _backfill(self, journal: SwapJournal, model: ServingModel) -> None:
        await self._ready()
        if journal.backfill.phase == "products":
            await self._backfill_products(journal, model)
            journal.backfill.phase = "users"
            journal.save(self.journal_path)
        await self._backfill_users(model)

    async def _backfill_products(self, journal: SwapJournal, model: ServingModel) -> None:
        backfill, started, applied = journal.backfill, time.perf_counter(), 0
        self.backfill_progress = 0.0
        consumer = await asyncio.to_thread(log_consumer, self.settings)
        chunks = iter_chunks(consumer, self.settings.topics.catalog, backfill.offsets, self.settings.backfill_batch)
        last_report = started
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                records, backfill.offsets = chunk
                events = []
                for record in records:
                    try:
                        events.append(parse_record(record.key, record.value, parse_catalog_event,
                                                   self.settings.event_limits))
                    except InvalidEvent:  # the catalog agent dead-letters it; a backfill only skips it
                        continue
                await write_catalog(events, self.index, model, self.lexical, self.bulk, self.deleted_at)
                backfill.products += len(records)
                applied += len(records)
                self.backfill_progress = _read_fraction(consumer, backfill.offsets)
                journal.save(self.journal_path)
                if time.perf_counter() - last_report > PROGRESS_EVERY_S:
                    last_report = time.perf_counter()
                    log.info("backfill %s: %d catalog events re-embedded (%.0f/s)", model.products,
                             backfill.products, applied / (last_report - started))
        finally:
            await asyncio.to_thread(consumer.close)
        if hasattr(self.index, "optimize"):  # Qdrant Edge: build the HNSW graph before serving from it
            await asyncio.to_thread(self.index.optimize, model.products)
        seconds = time.perf_counter() - started
        self.stats = {"version": model.version, "products": applied, "products_s": seconds,
                      "products_per_s": applied / seconds if seconds else 0.0}

    async def _backfill_users(self, model: ServingModel) -> None:
        started = time.perf_counter()
        user_ids = list(self.histories.keys())
        for i in range(0, len(user_ids), USERS_PER_STEP):
            # Read and write one step without yielding, so a behavior batch lands before or after it.
            histories = {u: UserHistory.from_json(self.histories.get(u)) for u in user_ids[i:i + USERS_PER_STEP]}
            rebuild_user_vectors(histories, self.index, self.points, model.products, model.users,
                                 self.settings.personalization)
            await asyncio.sleep(USERS_PAUSE_S)
        self.stats |= {"users": len(user_ids), "users_s": time.perf_counter() - started}
        log.info("backfill %s: %d user vectors rebuilt", model.users, len(user_ids))

    async def _activate(self, journal: SwapJournal, version: str, reason: str) -> None:
        previous = self.registry.active()
        journal.live, journal.backfill = [version, previous], None
        journal.save(self.journal_path)
        self.registry.activate(version)
        self.targets.keep_only(set(journal.live))
        removed = self.registry.collect_garbage(keep_retired=1)
        self._prune(journal)
        log.info("activated %s (previous %s kept for rollback; removed %s)", version, previous, removed or "none")
        await self._announce(ModelUpdate(kind=ACTIVATED, version=version, previous=previous, reason=reason))

    async def _abandon(self, journal: SwapJournal, reason: str) -> None:
        version = journal.backfill.version
        journal.backfill = None
        journal.save(self.journal_path)
        self.targets.keep_only(set(journal.live))
        self._prune(journal)
        await self._announce(ModelUpdate(kind=SWAP_ABANDONED, version=version, reason=reason))

    def _complete(self, version: str) -> bool:
        return self.registry.path(version).is_dir() and all(map(self.index.has_collection,
                                                                collection_names(version)))

    def _prune(self, journal: SwapJournal) -> None:
        versions = journal.live + ([journal.backfill.version] if journal.backfill else [])
        keep = {name for version in versions for name in collection_names(version)}
        for name in self.index.collections():
            if _COLLECTION_RE.match(name) and name not in keep:
                log.info("dropping %s (version no longer live)", name)
                self.index.drop_collection(name)


def _read_fraction(consumer, offsets: dict[int, int]) -> float:
    """How much of the assigned partitions ``consumer`` has read up to ``offsets`` (partition -> next offset),
    0..1, from the high watermarks its last fetches reported (no broker round trip); 0.0 while unknown."""
    ends = {tp.partition: consumer.highwater(tp) for tp in consumer.assignment()}
    total = sum(end for end in ends.values() if end)
    return min(1.0, sum(offsets.get(p, 0) for p, end in ends.items() if end) / total) if total else 0.0
