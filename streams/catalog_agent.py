"""The catalog agent: each batch of the catalog topic checked (invalid records dead-lettered), written into
the products collection of every write target (streams/catalog.py, with the tombstones Table) and counted;
deletions go into the tombstones Table."""

from __future__ import annotations

from typing import Callable

import faust

from cartwise.events import parse_catalog_event
from cartwise.index import VectorIndex
from cartwise.lexical import LexicalEncoder
from cartwise.settings import Settings
from encoders.bulk import BulkEncoder
from streams.catalog import record_deletions, write_catalog
from streams.dead_letters import DeadLetters
from streams.event_ages import EventAges
from streams.event_counts import EventCounts
from streams.index_calls import IndexCalls
from streams.indexing import ProductIndexing
from streams.journal import Backfill
from streams.targets import WriteTargets


class CatalogAgent:
    """The catalog agent's body (:meth:`run`) over the worker's parts: ``targets`` written through ``calls``
    (embedding on ``bulk``'s threads), ``tombstones`` (product_id -> event time, s, of its newest deletion),
    ``indexing`` told of each target's upserts except the collection a backfill is building (``running``:
    the swap coordinator's backfill under way, which optimizes its own at its end), outcomes counted in
    ``counts``, event ages in ``event_ages``, and ``applied()`` called after each batch that applied (users
    waiting on a product may find it now)."""

    def __init__(self, settings: Settings, index: VectorIndex, calls: IndexCalls, targets: WriteTargets,
                 lexical: LexicalEncoder, bulk: BulkEncoder, tombstones: faust.Table, indexing: ProductIndexing,
                 running: Callable[[], Backfill | None], dead_letters: DeadLetters, counts: EventCounts,
                 event_ages: EventAges, applied: Callable[[], None]) -> None:
        self.settings, self.index, self.calls, self.targets = settings, index, calls, targets
        self.lexical, self.bulk, self.tombstones, self.indexing = lexical, bulk, tombstones, indexing
        self.running, self.dead_letters, self.counts, self.event_ages = running, dead_letters, counts, event_ages
        self.applied = applied

    async def run(self, stream: faust.StreamT) -> None:
        """The agent: batches of ``catalog_batch`` events or ``catalog_batch_window_s`` seconds."""
        async for batch in stream.take_events(self.settings.catalog_batch, within=self.settings.catalog_batch_window_s):
            stamps = [event.message.timestamp for event in batch]
            self.event_ages.observe("catalog", "batched", stamps)
            parsed = []
            for event in batch:
                record = await self.dead_letters.parse(event, parse_catalog_event)
                if record is not None:
                    parsed.append(record)
            if parsed:
                await self._apply(parsed)
            self.event_ages.observe("catalog", "applied", stamps)

    async def _apply(self, events) -> None:
        backfill = self.running()
        for model in self.targets.models():
            plan = await write_catalog(events, self.index, self.calls, model, self.lexical, self.bulk, self.tombstones)
            if not (backfill and backfill.version == model.version):
                self.indexing.wrote(model.groups, len(plan.upserts))
                self.indexing.wrote(model.products, len(plan.upserts))
        record_deletions(events, self.tombstones)
        # applied + stale = len(events) in every target's plan: count the events once
        self.counts.add(self.settings.topics.catalog, "applied", len(plan.upserts) + len(plan.deletes))
        self.counts.add(self.settings.topics.catalog, "stale", plan.stale)
        self.applied()
