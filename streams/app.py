"""The faust app: a catalog agent, a behavior agent over the three behavior topics, the user-history
Table (changelog in Kafka), dead-lettering of invalid events, and a retry timer for users whose
products were not in the catalog yet."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import faust

from cartwise.events import InvalidEvent, parse_behavior_event, parse_catalog_event
from cartwise.index import VectorIndex
from cartwise.settings import Settings
from encoders.runtime import ActiveModel
from streams.behavior import rebuild_user_vectors, update_user_vectors
from streams.catalog import apply_plan, embed_upserts, plan_batch
from streams.transport import FastPollApp
from streams.user_state import Interaction, UserHistory

log = logging.getLogger(__name__)

_EVENT_TYPE_OF_TOPIC_FIELD = {"purchases": "purchase", "carts": "cart", "views": "view"}


class StreamWorker:
    """Stream processing for one process: owns the faust app; writes into the collections of the
    serving model in ``active``. Start with ``await worker.start()``, stop with ``await worker.stop()``.

    Counters (events since start): ``applied``, ``dead_lettered``, ``stale``."""

    def __init__(self, settings: Settings, index: VectorIndex, active: ActiveModel) -> None:
        self.settings, self.index, self.active = settings, index, active
        self.applied = self.dead_lettered = self.stale = 0
        self._pending_users: set[str] = set()
        self._catalog_changed = False
        self._dead_letter_topics: dict[str, faust.TopicT] = {}
        self._encode_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-encode")
        topics = settings.topics
        self._type_of_topic = {getattr(topics, f): t for f, t in _EVENT_TYPE_OF_TOPIC_FIELD.items()}
        self.app = FastPollApp(
            settings.app_id, broker=f"kafka://{settings.kafka_bootstrap}", store="memory://", web_enabled=False,
            topic_partitions=settings.partitions, fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
            consumer_auto_offset_reset="earliest", producer_acks=1, stream_wait_empty=False,
            producer_linger=settings.producer_linger_ms / 1000,
        )
        self.catalog_topic = self.app.topic(topics.catalog, key_type=bytes, value_type=bytes, value_serializer="raw")
        self.behavior_topics = self.app.topic(*topics.behavior, key_type=bytes, value_type=bytes,
                                              value_serializer="raw")
        # use_partitioner: batches (take_events) write outside per-event context; keys hash like the source.
        self.histories = self.app.Table("user_history", default=None, partitions=settings.partitions,
                                        use_partitioner=True)
        self.app.agent(self.catalog_topic, name="catalog")(self._catalog_agent)
        self.app.agent(self.behavior_topics, name="behavior")(self._behavior_agent)
        self.app.timer(1.0)(self._retry_pending)

    @property
    def consumed(self) -> int:
        """Events consumed since start: applied + stale + dead-lettered."""
        return self.applied + self.stale + self.dead_lettered

    async def start(self) -> None:
        """Start consuming (joins the consumer group, recovers the Table from its changelog)."""
        await self.app.start()

    async def stop(self) -> None:
        """Stop consuming and release the encode thread."""
        await self.app.stop()
        self._encode_pool.shutdown(wait=True)

    async def _dead_letter(self, event, reason: str) -> None:
        message = event.message
        log.warning("dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        name = self.settings.topics.dead_letter(message.topic)
        dlq = self._dead_letter_topics.get(name) or self._dead_letter_topics.setdefault(
            name, self.app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw"))
        headers = {"error": reason.encode(), "source_topic": message.topic.encode(),
                   "source_partition": str(message.partition).encode(), "source_offset": str(message.offset).encode()}
        await dlq.send(key=message.key, value=message.value, headers=headers)
        self.dead_lettered += 1

    async def _catalog_agent(self, stream) -> None:
        async for batch in stream.take_events(self.settings.catalog_batch, within=self.settings.catalog_batch_window_s):
            parsed = []
            for event in batch:
                try:
                    parsed.append(parse_catalog_event(event.value))
                except InvalidEvent as err:
                    await self._dead_letter(event, err.reason)
            if parsed:
                await self._apply_catalog(parsed)

    async def _apply_catalog(self, events) -> None:
        model = self.active.current
        plan = plan_batch(events, self.index, model.products)
        vectors = await asyncio.get_running_loop().run_in_executor(
            self._encode_pool, embed_upserts, model.encoder, plan.upserts)
        apply_plan(plan, vectors, self.index, model.products)
        self.applied += len(plan.upserts) + len(plan.deletes)
        self.stale += plan.stale
        self._catalog_changed = True

    async def _behavior_agent(self, stream) -> None:
        async for batch in stream.take_events(self.settings.catalog_batch, within=self.settings.catalog_batch_window_s):
            updates: dict[str, tuple[UserHistory, list[Interaction]]] = {}
            for event in batch:
                try:
                    parsed = parse_behavior_event(event.value, self._type_of_topic[event.message.topic])
                except InvalidEvent as err:
                    await self._dead_letter(event, err.reason)
                    continue
                history, added = updates.get(parsed.user_id) or (
                    UserHistory.from_json(self.histories.get(parsed.user_id)), [])
                if history.apply(parsed, self.settings.personalization.max_history):
                    self.applied += 1
                    kept = history.find(parsed.event_id)
                    updates[parsed.user_id] = (history, added + [kept] if kept else added)
                else:
                    self.stale += 1
            for user_id, (history, _) in updates.items():
                self.histories[user_id] = history.to_json()
            if updates:
                model = self.active.current
                pending = update_user_vectors(updates, self.index, model.products, model.users,
                                              self.settings.personalization)
                self._track_pending(updates.keys(), pending)

    def _track_pending(self, users, pending: set[str]) -> None:
        self._pending_users.difference_update(set(users) - pending)
        self._pending_users.update(pending)

    async def _retry_pending(self) -> None:
        """Users whose products were missing get their vectors rebuilt once the catalog has changed."""
        if not (self._pending_users and self._catalog_changed):
            return
        self._catalog_changed = False
        histories = {u: UserHistory.from_json(self.histories.get(u)) for u in list(self._pending_users)}
        model = self.active.current
        self._track_pending(histories, rebuild_user_vectors(histories, self.index, model.products, model.users,
                                                            self.settings.personalization))
