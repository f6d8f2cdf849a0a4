"""Event schemas for the Kafka topics (JSON values, validated with pydantic) and the limits every
consumed record must meet.

Every event carries ``event_id`` (idempotency key), ``schema_version`` and ``event_time``
(when it happened at the source, timezone-aware). Catalog events are keyed by product_id on a
compacted topic; behavior events and user control events (erasure) are keyed by user_id, so a user's
events of every kind reach the worker that owns the user's partition.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Callable, ClassVar, Literal, TypeVar, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

SCHEMA_VERSION = 1
BehaviorType = Literal["purchase", "cart", "view"]


class InvalidEvent(ValueError):
    """An event that cannot be applied; ``reason`` is written to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(min_length=1, max_length=128)
    schema_version: Literal[1] = SCHEMA_VERSION
    event_time: AwareDatetime

    key_field: ClassVar[str]  # the field the Kafka message key must equal

    @property
    def key(self) -> str:
        """The Kafka message key the event must carry."""
        return getattr(self, self.key_field)


class ProductUpsert(_Event):
    """Create or replace a product. ``category_path`` runs from the root, e.g. ["electronics", "smartphone"]."""

    key_field: ClassVar[str] = "product_id"

    op: Literal["upsert"] = "upsert"
    product_id: str = Field(min_length=1, max_length=128)
    title: str = Field(min_length=1, max_length=1000)
    brand: str | None = Field(None, max_length=200)
    category_path: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=16)
    price: float | None = Field(None, ge=0.0)
    in_stock: bool = True
    description: str | None = Field(None, max_length=20000)

    @field_validator("price")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("price must be finite")
        return v


class ProductDelete(_Event):
    """Remove a product from search."""

    key_field: ClassVar[str] = "product_id"

    op: Literal["delete"] = "delete"
    product_id: str = Field(min_length=1, max_length=128)


CatalogEvent = Annotated[Union[ProductUpsert, ProductDelete], Field(discriminator="op")]


class BehaviorEvent(_Event):
    """A purchase, cart addition or view of ``product_id`` by ``user_id``."""

    key_field: ClassVar[str] = "user_id"

    event_type: BehaviorType
    user_id: str = Field(min_length=1, max_length=128)
    product_id: str = Field(min_length=1, max_length=128)
    session_id: str | None = Field(None, max_length=128)
    query: str | None = Field(None, max_length=512, description="the search that led to it, when known")
    origin: Literal["playground"] | None = Field(
        None, description="set when no shopper made the event (the playground's buttons): applied like any "
                          "event, never trained on")
    request_id: str | None = Field(
        None, min_length=1, max_length=64,
        description="the answer the shopper acted on (SearchResponse.request_id), when known: joins the event "
                    "to the products that answer showed (Impression)")


class UserForget(_Event):
    """Erase everything kept about ``user_id`` (a privacy request): history, vectors, purchases."""

    key_field: ClassVar[str] = "user_id"

    op: Literal["forget"] = "forget"
    user_id: str = Field(min_length=1, max_length=128)


class Impression(_Event):
    """The products one Search, Recommend or SimilarProducts answer showed, in rank order, published by the
    API on the impressions topic. ``event_id`` is the answer's request id (SearchResponse.request_id), which
    behavior events may carry back; ``event_time`` when it was answered. Keyed by ``user_id``, or by the
    request id for an anonymous shopper."""

    user_id: str | None = Field(None, min_length=1, max_length=128)
    query: str | None = Field(None, max_length=4096, description="the query text; None for none")
    similar_to: str | None = Field(None, max_length=128, description="SimilarProducts' product_id")
    strategy: str = Field(max_length=32, description="SearchResponse.strategy")
    model_version: str = Field(max_length=64)
    product_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(max_length=1000)

    @property
    def key(self) -> str:
        """``user_id``, or the request id for an anonymous shopper."""
        return self.user_id or self.event_id

    @property
    def request_id(self) -> str:
        """The answer's request id (``event_id``)."""
        return self.event_id


E = TypeVar("E", bound=_Event)
_catalog_adapter: TypeAdapter[ProductUpsert | ProductDelete] = TypeAdapter(CatalogEvent)


def validation_reason(err: ValidationError) -> str:
    """A ValidationError as one line naming each bad field: "user_id: String should have at least 1 character"."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in err.errors())


def _validated(validate: Callable[[bytes], E], raw: bytes | None, empty: str = "empty value") -> E:
    """``validate(raw)``, its ValidationError turned into InvalidEvent naming the bad fields."""
    if raw is None:
        raise InvalidEvent(empty)
    try:
        return validate(raw)
    except ValidationError as err:
        raise InvalidEvent(validation_reason(err)) from None


def parse_catalog_event(raw: bytes | None) -> ProductUpsert | ProductDelete:
    """Decode a ``catalog.products`` value. Raises InvalidEvent naming the bad field."""
    return _validated(_catalog_adapter.validate_json, raw,
                      "empty value (tombstones are not catalog events; send op=delete)")


def parse_behavior_event(raw: bytes | None, expected_type: BehaviorType) -> BehaviorEvent:
    """Decode a behavior topic value whose ``event_type`` must be ``expected_type``.

    Raises InvalidEvent naming the bad field, or the type mismatch."""
    event = _validated(BehaviorEvent.model_validate_json, raw)
    if event.event_type != expected_type:
        raise InvalidEvent(f"event_type: {event.event_type!r} on the {expected_type} topic")
    return event


def parse_control_event(raw: bytes | None) -> UserForget:
    """Decode a user control topic value. Raises InvalidEvent naming the bad field."""
    return _validated(UserForget.model_validate_json, raw)


def parse_impression(raw: bytes | None) -> Impression:
    """Decode an impressions topic value. Raises InvalidEvent naming the bad field."""
    return _validated(Impression.model_validate_json, raw)


@dataclass(frozen=True, slots=True)
class EventLimits:
    """What every consumed record must meet beyond its schema: values of at most ``max_bytes`` bytes, and
    an ``event_time`` at most ``max_ahead_s`` seconds ahead of the wall clock (a far-future time would
    advance stream time and expire every user, streams/erasure.py)."""

    max_bytes: int = 65_536
    max_ahead_s: float = 3600.0


def parse_record(key: bytes | None, value: bytes | None, parse: Callable[[bytes | None], E], limits: EventLimits,
                 now_s: float | None = None) -> E:
    """Decode one consumed record with ``parse`` (e.g. :func:`parse_catalog_event`) and check it against
    ``limits`` and its key (UTF-8, equal to the event's own id, so partitioning and compaction follow the
    entity). ``now_s``: wall clock, s since the epoch (default: now).

    Raises InvalidEvent with the reason written to the dead-letter topic."""
    if value is not None and len(value) > limits.max_bytes:
        raise InvalidEvent(f"value: {len(value):,} bytes, over the {limits.max_bytes:,}-byte limit")
    event = parse(value)
    try:
        decoded = key.decode() if key is not None else None
    except UnicodeDecodeError:
        raise InvalidEvent(f"key: not UTF-8 ({key[:64]!r})") from None
    if decoded != event.key:
        raise InvalidEvent(f"key: {decoded!r} is not the event's id {event.key!r}")
    ahead = event.event_time.timestamp() - (time.time() if now_s is None else now_s)
    if ahead > limits.max_ahead_s:
        raise InvalidEvent(f"event_time: {ahead:,.0f} s ahead of the clock (at most {limits.max_ahead_s:,.0f} s)")
    return event


def encode_event(event: BaseModel) -> bytes:
    """JSON bytes of an event, as producers write them."""
    return event.model_dump_json(exclude_none=True).encode()


__all__ = [
    "BehaviorEvent", "BehaviorType", "CatalogEvent", "EventLimits", "InvalidEvent", "ProductDelete", "ProductUpsert",
    "Impression", "SCHEMA_VERSION", "UserForget", "encode_event", "parse_behavior_event", "parse_catalog_event",
    "parse_control_event", "parse_impression", "parse_record", "validation_reason",
]
