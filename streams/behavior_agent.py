"""The behavior agent and the users waiting on a product: each batch of the user-keyed topics (purchases,
carts, views, erasure requests) checked (invalid records dead-lettered), applied to the users' histories
in the history Table, then to their vectors in every write target (streams/behavior.py) and to the
popularity counts; erasure requests and users expired by the TTL in stream time removed
(streams/erasure.py). Users with an interaction whose product is not in the catalog yet are kept and
rebuilt by :meth:`BehaviorAgent.retry_pending` once the catalog has changed.

Every event is written into each of the write targets (streams/targets.py): the active version, the
rollback target, and during a swap the version being backfilled."""

from __future__ import annotations

import logging
from functools import partial
from typing import Iterable

import faust

from cartwise.events import BehaviorEvent, parse_behavior_event, parse_control_event
from cartwise.index import VectorIndex
from cartwise.personalization import UserHistory
from cartwise.settings import Settings
from streams.behavior import DecodedHistories, UserUpdate, rebuild_user_vectors, update_user_vectors
from streams.changelog import TableBatch
from streams.dead_letters import DeadLetters
from streams.erasure import StreamClock, delete_user_points, forget_histories
from streams.event_ages import EventAges
from streams.event_counts import EventCounts
from streams.index_calls import IndexCalls
from streams.popularity import PopularityCounts
from streams.table_store import collector_paused
from streams.targets import WriteTargets
from streams.user_points import UserPoints

log = logging.getLogger(__name__)

_EVENT_TYPE_OF_TOPIC_FIELD = {"purchases": "purchase", "carts": "cart", "views": "view"}
_RECOVERY_CHUNK = 512  # users whose points are read at once after a restart


class BehaviorAgent:
    """The behavior agent's body (:meth:`run`), its retry timer (:meth:`retry_pending`) and the history
    Table's recovery callback (:meth:`on_histories_recovered`) over the worker's parts: ``histories`` (the
    history Table, user_id -> :meth:`UserHistory.to_json`), the user ``points`` of the ``targets`` written
    through ``calls``, ``popularity``, stream time ``clock``, outcomes counted in ``counts``, event ages in
    ``event_ages``.

    State: ``pending``, the users waiting on a product; users removed since start, ``forgotten`` (erasure
    requests applied) and ``expired`` (by the TTL in stream time)."""

    def __init__(self, settings: Settings, index: VectorIndex, calls: IndexCalls, points: UserPoints,
                 popularity: PopularityCounts, targets: WriteTargets, histories: faust.Table, clock: StreamClock,
                 dead_letters: DeadLetters, counts: EventCounts, event_ages: EventAges) -> None:
        self.settings, self.index, self.calls, self.points = settings, index, calls, points
        self.popularity, self.targets, self.histories, self.clock = popularity, targets, histories, clock
        self.dead_letters, self.counts, self.event_ages = dead_letters, counts, event_ages
        self.decoded = DecodedHistories(settings.user_cache_size)
        self.pending: set[str] = set()
        self.forgotten = self.expired = 0
        self._catalog_changed = False
        self._catalog_sizes: tuple[int, ...] = ()  # of the targets' products collections at the last retry
        topics = settings.topics
        self._parser_of_topic = {getattr(topics, f): partial(parse_behavior_event, expected_type=t)
                                 for f, t in _EVENT_TYPE_OF_TOPIC_FIELD.items()}
        self._parser_of_topic[topics.user_control] = parse_control_event

    async def run(self, stream: faust.StreamT) -> None:
        """The agent: batches of ``behavior_batch`` events or ``behavior_batch_window_s`` seconds."""
        settings = self.settings
        async for batch in stream.take_events(settings.behavior_batch, within=settings.behavior_batch_window_s):
            stamps = [event.message.timestamp for event in batch]
            self.event_ages.observe("behavior", "batched", stamps)
            updates: dict[str, UserUpdate] = {}
            forgets: set[str] = set()
            for event in batch:
                parsed = await self.dead_letters.parse(event, self._parser_of_topic[event.message.topic])
                if parsed is None:
                    continue
                if isinstance(parsed, BehaviorEvent):
                    outcome = self._add_behavior(parsed, updates, forgets)
                    if outcome == "applied":
                        self.popularity.add(parsed, event.message.partition)
                else:  # an erasure request: the user's earlier events in this batch go with the rest
                    updates.pop(parsed.user_id, None)
                    forgets.add(parsed.user_id)
                    outcome = "applied"
                self.counts.add(event.message.topic, outcome)
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
        applied = update.history.apply(event, self.settings.personalization.max_history)
        return "applied" if applied else "stale"

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
            self.pending.difference_update(user_ids)
            log.info("removed %d users (erasure or expiry)", len(user_ids))
        return len(user_ids)

    def _track_pending(self, users: Iterable[str], pending: set[str]) -> None:
        self.pending.difference_update(set(users) - pending)
        self.pending.update(pending)

    def catalog_changed(self) -> None:
        """The catalog agent applied a batch: the next :meth:`retry_pending` rebuilds the waiting users."""
        self._catalog_changed = True

    async def retry_pending(self) -> None:
        """Users whose products were missing get their vectors rebuilt once the catalog has changed: through
        this worker's catalog agent, or another worker's (with several workers a user's product can arrive
        on a catalog partition another worker owns; the products collections' sizes then change)."""
        if not self.pending:
            return
        models = self.targets.models()
        sizes = await self.calls.run(lambda: tuple(self.index.count(m.products) for m in models))
        if not (self._catalog_changed or sizes != self._catalog_sizes):
            return
        self._catalog_changed, self._catalog_sizes = False, sizes
        histories = {u: UserHistory.from_json(self.histories.get(u)) for u in list(self.pending)}
        self._track_pending(histories, await self.calls.run(self._rebuild_vectors, histories, models))

    def _rebuild_vectors(self, histories: dict[str, UserHistory], models) -> set[str]:
        """streams/behavior.rebuild_user_vectors in every write target; the users still waiting on a product."""
        return set().union(*(rebuild_user_vectors(histories, self.index, self.points, m.products, m.users,
                                                  self.settings.personalization) for m in models))

    async def on_histories_recovered(self) -> None:
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
            for start in range(0, len(users), _RECOVERY_CHUNK):
                chunk = users[start:start + _RECOVERY_CHUNK]
                points = await self.calls.run(self.points.get, model.users, chunk)
                self.pending.update(u for u in chunk if u not in points or points[u].state.pending
                                    or points[u].history != histories[u].digest())
        self._catalog_changed = bool(self.pending)
        log.info("%d users to rebuild after recovery (waiting for products, or behind their history)",
                 len(self.pending))
