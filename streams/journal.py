"""The swap journal on the swap control topic: which versions' collections are complete and kept current,
how far a running backfill has got, and which partitions' users every worker has rebuilt for it.

The control topic (``{app_id}-swap-control``, one partition, compacted; cartwise.kafka_io.ensure_topics)
is shared by every stream worker of a consumer group, so whichever worker leads a swap next (the owner of
the models.updates partition, streams/swap.py) resumes it where the last leader stopped. Its records,
latest per key wins:

- key ``journal``: the :class:`SwapJournal` (JSON), written by the leader after every step;
- key ``users-done/{attempt}/{partition}``: the worker id of the worker that rebuilt the users of that
  user-history partition for backfill ``attempt``; removed (tombstones) when the backfill ends."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from cartwise.kafka_io import log_consumer, read_topic, swap_control_topic
from cartwise.settings import Settings

JOURNAL_KEY = b"journal"
_USERS_DONE = "users-done/"


class Backfill(BaseModel):
    """A version being built: ``phase`` products (the leader re-embeds the catalog from ``offsets``, the
    next catalog offset per partition) then users (every worker rebuilds the users of its own partitions).
    ``attempt`` tells this backfill's users-done records from those of an earlier, abandoned one."""

    version: str
    phase: Literal["products", "users"] = "products"
    offsets: dict[int, int] = Field(default_factory=dict)
    products: int = Field(0, description="catalog events applied so far")
    reason: str = ""
    attempt: str = Field(default_factory=lambda: uuid.uuid4().hex)
    started_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class SwapJournal(BaseModel):
    """``live``: versions whose products and users collections are complete and written by every event;
    ``backfill``: the version being built, if any. Not the record of the active version: that is the
    registry's ACTIVE (cartwise/lifecycle.py), which ``live`` is rebuilt from at every start."""

    live: list[str] = Field(default_factory=list)
    backfill: Backfill | None = None

    def encode(self) -> bytes:
        """The record value (UTF-8 JSON)."""
        return self.model_dump_json().encode()


def users_done_key(attempt: str, partition: int) -> bytes:
    """Key of the record saying the users of user-history ``partition`` are rebuilt for ``attempt``."""
    return f"{_USERS_DONE}{attempt}/{partition}".encode()


class ControlState:
    """The control topic folded to its latest value per key (tombstones remove the key)."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self._journal: SwapJournal | None = None

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Fold in one record (``value`` None: a tombstone)."""
        if key == JOURNAL_KEY:
            self._journal = None
        if value is None:
            self.records.pop(key, None)
        else:
            self.records[key] = value

    @property
    def journal(self) -> SwapJournal:
        """The latest journal (empty before the first one)."""
        if self._journal is None:
            value = self.records.get(JOURNAL_KEY)
            self._journal = SwapJournal.model_validate_json(value) if value else SwapJournal()
        return self._journal

    def users_done(self, attempt: str) -> set[int]:
        """The user-history partitions whose users are rebuilt for ``attempt``."""
        prefix = f"{_USERS_DONE}{attempt}/".encode()
        return {int(key[len(prefix):]) for key in self.records if key.startswith(prefix)}

    def done_keys_other_than(self, attempt: str | None) -> list[bytes]:
        """Keys of users-done records of every attempt but ``attempt`` (to remove: those backfills ended)."""
        keep = f"{_USERS_DONE}{attempt}/".encode() if attempt else None
        return [k for k in self.records if k.startswith(_USERS_DONE.encode()) and not (keep and k.startswith(keep))]


def read_control(settings: Settings) -> tuple[ControlState, int]:
    """The control topic read to its current end, and the next offset to follow it from. Blocking (a few
    broker round trips). Raises kafka.errors.KafkaError when no broker answers."""
    consumer = log_consumer(settings)
    try:
        records, ends = read_topic(consumer, swap_control_topic(settings))
    finally:
        consumer.close()
    state = ControlState()
    for record in records:
        state.apply(record.key, record.value)
    return state, ends.get(0, 0)
