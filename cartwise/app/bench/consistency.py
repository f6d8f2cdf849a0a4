"""What a benchmark checks after the stream worker has consumed a known list of events: the state the
events say it must hold (``Expected``), and how far the service's history Table and index are from it
(``compare``). Shared by ``cartwise bench recovery`` (after kills) and ``cartwise bench ingest`` (after the
fast path).

Expected state: each user's history is the source's behavior events applied in order
(cartwise.personalization.UserHistory), the user vector a rebuild from it over the indexed product
vectors (the slow path); each product the newest catalog upsert by event time (the later one on a tie)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from cartwise.catalog import point_id, product_payload
from cartwise.datasets import Record
from cartwise.events import BehaviorEvent, ProductUpsert
from cartwise.index import EdgeIndex
from cartwise.kafka_io import consumer_lag, log_consumer, partitions_of
from cartwise.lifecycle import collection_names
from cartwise.personalization import UserHistory, UserPoint, user_vector
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from streams.app import HISTORY_TABLE
from streams.table_recovery import changelog_values

VECTOR_TOLERANCE = 1e-4  # an incremental sum and a rebuild differ by float32 rounding only


@dataclass
class Expected:
    """What the source events say the service must hold (histories of at most ``max_history`` interactions).
    Built from a list (:meth:`of`) or one event at a time as a load sends them (:meth:`apply`), in memory
    bounded by the users and products, not by the events."""

    max_history: int
    histories: dict[str, UserHistory] = field(default_factory=dict)
    products: dict[str, ProductUpsert] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Iterable[Record], max_history: int) -> "Expected":
        """Histories and newest products from ``records`` in order (module doc)."""
        expected = cls(max_history)
        for record in records:
            expected.apply(record)
        return expected

    def apply(self, record: Record) -> None:
        """Fold in the next source event (module doc)."""
        event = record.event
        if isinstance(event, BehaviorEvent):
            self.histories.setdefault(event.user_id, UserHistory()).apply(event, self.max_history)
        else:
            self._keep_newest(event)

    def merge(self, other: "Expected") -> None:
        """Fold in ``other``, built from events sent beside these (another producer): its users must be other
        users (a history depends on the order of its events). Raises ValueError when they are not."""
        shared = self.histories.keys() & other.histories.keys()
        if shared:
            raise ValueError(f"{len(shared)} users in both, e.g. {next(iter(shared))!r}: their order is unknown")
        self.histories.update(other.histories)
        for event in other.products.values():
            self._keep_newest(event)

    def _keep_newest(self, event: ProductUpsert) -> None:
        kept = self.products.get(event.product_id)
        if kept is None or event.event_time >= kept.event_time:
            self.products[event.product_id] = event


def caught_up(settings: Settings) -> bool:
    """Whether the worker's consumer group has no lag on the source topics (cartwise.kafka_io.consumer_lag)."""
    return not any(consumer_lag(settings, [settings.topics.catalog, *settings.topics.behavior]).values())


def stored_histories(settings: Settings) -> dict[str, UserHistory]:
    """The newest value per user in the history Table's changelog topic."""
    topic = f"{settings.app_id}-{HISTORY_TABLE}-changelog"
    consumer = log_consumer(settings)
    try:
        partitions = [tp.partition for tp in partitions_of(consumer, topic)]
    finally:
        consumer.close()
    latest = changelog_values(settings, topic, dict.fromkeys(partitions, 0))
    return {user: UserHistory.from_json(value) for user, value in latest.items()}


def compare(settings: Settings, expected: Expected, histories: dict[str, UserHistory]) -> dict:
    """lost, double_applied, mismatched_users, mismatched_products of the stopped service's index and of
    ``histories`` (its history Table, read from the changelog while its broker ran) against ``expected``
    (module doc)."""
    version = ModelRegistry(settings.models_dir).active()
    products, users, _ = collection_names(version)
    index = EdgeIndex(settings.index_dir)
    try:
        hits = index.retrieve(products, [point_id(p) for p in expected.products], with_vectors=True)
        stored_products = {h.payload["product_id"]: h for h in hits}
        extra_products = index.count(products) - len(stored_products)
        user_hits = index.retrieve(users, [point_id(u) for u in expected.histories], with_vectors=True)
        points = {p.user_id: p for p in (UserPoint.from_payload(h.payload, h.vector) for h in user_hits)}
    finally:
        index.close()
    vectors = {pid: hit.vector for pid, hit in stored_products.items()}
    params = settings.personalization
    lost = sum(1 for user, history in expected.histories.items() for i in history.interactions
               if histories.get(user) is None or histories[user].find(i.event_id) is None)
    lost += sum(1 for pid in expected.products if pid not in stored_products)
    double, mismatched_users = 0, 0
    for user, history in expected.histories.items():
        want = user_vector(history, vectors, params)
        point = points.get(user)
        if want is None:
            mismatched_users += point is not None
            continue
        double += max(0, point.state.n - want.n) if point else 0
        mismatched_users += point is None or point.history != history.digest() or point.state.n != want.n or \
            float(np.abs(point.state.vector - want.vector).max()) > VECTOR_TOLERANCE
    mismatched_products = extra_products + sum(
        1 for pid, event in expected.products.items()
        if pid in stored_products and _payload_differs(stored_products[pid].payload, product_payload(event)))
    return {"lost": lost, "double_applied": double, "mismatched_users": mismatched_users,
            "mismatched_products": mismatched_products + sum(1 for p in expected.products if p not in stored_products)}


def _payload_differs(stored: dict, wanted: dict) -> bool:
    return any(stored.get(k) != v for k, v in wanted.items())
