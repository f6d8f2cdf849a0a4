"""Messages on the ``models.updates`` topic: how the trainer, operators, the swap coordinator (stream
worker) and the API processes coordinate a model swap, with the registry as the record of what is active.

- ``swap_requested`` (trainer after its quality gate passed, ``cartwise models activate|rollback``):
  the coordinator backfills the version's collections unless they are live already, then activates it.
- ``activated`` (coordinator, after the registry's ACTIVE names the version): every API process reloads
  the registry's active version and switches encoder and collections as one pair.
- ``repair_requested`` (``cartwise repair``): the coordinator rebuilds the active version's collections
  in place from the catalog topic and the user-history changelog.
- ``held`` (trainer, gate failed) and ``swap_abandoned`` (coordinator): informational; nothing changes.

JSON values, key = the version, one partition so every reader sees one order."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from cartwise.kafka_io import make_producer
from cartwise.settings import Settings

SWAP_REQUESTED, ACTIVATED, HELD, SWAP_ABANDONED = "swap_requested", "activated", "held", "swap_abandoned"
REPAIR_REQUESTED = "repair_requested"


class ModelUpdate(BaseModel):
    """One message: what happened to ``version`` (and from which ``previous`` active version), and why."""

    kind: Literal["swap_requested", "activated", "held", "swap_abandoned", "repair_requested"]
    version: str
    previous: str | None = None
    reason: str = ""
    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    def encode(self) -> bytes:
        """The message value (UTF-8 JSON)."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, value: bytes) -> "ModelUpdate | None":
        """Parse a message value; None for anything that is not a ModelUpdate (logged by the caller)."""
        try:
            return cls.model_validate_json(value)
        except ValidationError:
            return None


def publish_update(settings: Settings, update: ModelUpdate, timeout_s: float = 10.0) -> None:
    """Send ``update`` to ``models.updates`` and wait for the broker's ack.

    Raises kafka.errors.KafkaError (e.g. NoBrokersAvailable when no broker runs at ``settings.bootstrap``)."""
    producer = make_producer(settings)
    try:
        producer.send(settings.topics.models_updates, key=update.version.encode(), value=update.encode()).get(timeout_s)
    finally:
        producer.close()
