"""Catalog domain: product text for the encoder, index payloads, point ids."""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass

from cartwise.events import ProductUpsert
from cartwise.index.base import CATEGORY_SEPARATOR, TEXT_DIGEST, stock_keyword

_POINT_NAMESPACE = uuid.UUID("6f1c1d2e-8a53-4f4e-9d0b-2f6d7c3a9b10")


@functools.lru_cache(maxsize=1 << 18)  # the stream worker maps the same users and products again and again
def point_id(external_id: str) -> str:
    """Qdrant point id (UUIDv5 string) of a product or user id; ids of any form map stably."""
    return str(uuid.uuid5(_POINT_NAMESPACE, external_id))


def category_prefixes(path: list[str]) -> list[str]:
    """Every prefix of a category path, joined: ["a", "a > b", "a > b > c"].

    Stored as one keyword array so a category-prefix filter of any depth is one indexed match."""
    return [CATEGORY_SEPARATOR.join(path[: i + 1]) for i in range(len(path))]


def product_text(title: str, brand: str | None, category_path: list[str], description: str | None = None,
                 max_chars: int = 1000) -> str:
    """Encoder input for a product: title, brand, category path, then the description (docs/architecture.md).

    The character budget keeps tokenization cheap; the tokenizer truncates to its token budget after it."""
    parts = [title]
    if brand:
        parts.append(f"brand: {brand}")
    if category_path:
        parts.append(f"category: {CATEGORY_SEPARATOR.join(category_path)}")
    if description:
        parts.append(description)
    return ". ".join(parts)[:max_chars]


def text_digest(text: str) -> str:
    """16 hex digits of the SHA-1 of a product's encoder text: equal exactly when the texts are (the
    vectors of one text can differ in their last bits between batches, so they cannot say it)."""
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ProductView:
    """A product as search returns it (decoded from the index payload)."""

    product_id: str
    title: str
    brand: str
    category_path: list[str]
    price: float
    in_stock: bool

    @classmethod
    def from_payload(cls, payload: dict) -> "ProductView":
        """Decode an index payload written by :func:`product_payload`."""
        return cls(
            product_id=payload["product_id"],
            title=payload.get("title", ""),
            brand=payload.get("brand_display", ""),
            category_path=list(payload.get("category_path", [])),
            price=float(payload.get("price", 0.0)),
            in_stock=bool(payload.get("in_stock", True)),
        )


def product_payload(event: ProductUpsert) -> dict:
    """Index payload of a product. ``brand`` is lower-cased for case-insensitive filtering;
    ``updated_at`` (event time, s) orders concurrent writes."""
    payload = {
        "product_id": event.product_id,
        "title": event.title,
        "category_path": list(event.category_path),
        "category_prefixes": category_prefixes(list(event.category_path)),
        "in_stock": event.in_stock,
        "stock": stock_keyword(event.in_stock),
        "updated_at": event.event_time.timestamp(),
        TEXT_DIGEST: text_digest(event_product_text(event)),
    }
    if event.brand:
        payload["brand"] = event.brand.lower()
        payload["brand_display"] = event.brand
    if event.price is not None:
        payload["price"] = event.price
    return payload


def event_product_text(event: ProductUpsert) -> str:
    """:func:`product_text` of a catalog upsert."""
    return product_text(event.title, event.brand, list(event.category_path), event.description)


def lexical_text(title: str, brand: str | None, category_path: list[str], description: str | None = None,
                 max_chars: int = 1000) -> str:
    """Text of a product's BM25 vector: the words of :func:`product_text` without its field labels, which
    would add the same terms to every product."""
    return " ".join(filter(None, [title, brand, *category_path, description]))[:max_chars]


def event_lexical_text(event: ProductUpsert) -> str:
    """:func:`lexical_text` of a catalog upsert."""
    return lexical_text(event.title, event.brand, list(event.category_path), event.description)
