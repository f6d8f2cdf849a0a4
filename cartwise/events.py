"""Event schemas for the Kafka topics (JSON values, validated with pydantic).

Every event carries ``event_id`` (idempotency key), ``schema_version`` and ``event_time``
(when it happened at the source, timezone-aware). Catalog events are keyed by product_id on a
compacted topic; behavior events are keyed by user_id.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

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


class ProductUpsert(_Event):
    """Create or replace a product. ``category_path`` runs from the root, e.g. ["electronics", "smartphone"]."""

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

    op: Literal["delete"] = "delete"
    product_id: str = Field(min_length=1, max_length=128)


CatalogEvent = Annotated[Union[ProductUpsert, ProductDelete], Field(discriminator="op")]


class BehaviorEvent(_Event):
    """A purchase, cart addition or view of ``product_id`` by ``user_id``."""

    event_type: BehaviorType
    user_id: str = Field(min_length=1, max_length=128)
    product_id: str = Field(min_length=1, max_length=128)
    session_id: str | None = Field(None, max_length=128)
    query: str | None = Field(None, max_length=512, description="the search that led to it, when known")


_catalog_adapter: TypeAdapter[ProductUpsert | ProductDelete] = TypeAdapter(CatalogEvent)


def _reason(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in err.errors())


def parse_catalog_event(raw: bytes | None) -> ProductUpsert | ProductDelete:
    """Decode a ``catalog.products`` value. Raises InvalidEvent naming the bad field."""
    if raw is None:
        raise InvalidEvent("empty value (tombstones are not catalog events; send op=delete)")
    try:
        return _catalog_adapter.validate_json(raw)
    except ValidationError as err:
        raise InvalidEvent(_reason(err)) from None


def parse_behavior_event(raw: bytes | None, expected_type: BehaviorType) -> BehaviorEvent:
    """Decode a behavior topic value whose ``event_type`` must be ``expected_type``.

    Raises InvalidEvent naming the bad field, or the type mismatch."""
    if raw is None:
        raise InvalidEvent("empty value")
    try:
        event = BehaviorEvent.model_validate_json(raw)
    except ValidationError as err:
        raise InvalidEvent(_reason(err)) from None
    if event.event_type != expected_type:
        raise InvalidEvent(f"event_type: {event.event_type!r} on the {expected_type} topic")
    return event


def encode_event(event: BaseModel) -> bytes:
    """JSON bytes of an event, as producers write them."""
    return event.model_dump_json(exclude_none=True).encode()


__all__ = [
    "BehaviorEvent", "BehaviorType", "CatalogEvent", "InvalidEvent", "ProductDelete", "ProductUpsert",
    "SCHEMA_VERSION", "encode_event", "parse_behavior_event", "parse_catalog_event",
]
