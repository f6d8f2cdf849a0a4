"""Real datasets under ``../shared/data`` turned into Cartwise events (see that folder's README).

- ``rees46``: behavior events in event-time order, with catalog upserts derived from each product's
  first sighting and from its price changes (the data has no titles: the title is brand + leaf category).
- ``flipkart``, ``amazon_uk_toys``: catalog upserts only, with their real category trees.
- ``homedepot``: catalog upserts only (54,667 products, titles only)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from cartwise.events import BehaviorEvent, ProductUpsert

DATASETS = ("rees46", "flipkart", "amazon_uk_toys", "homedepot")
_EPOCH = datetime(2019, 10, 1, tzinfo=timezone.utc)  # catalog snapshots carry no time; use a fixed one


def data_root() -> Path:
    """``$CARTWISE_SHARED_DATA`` or ``../shared/data`` relative to the working directory."""
    return Path(os.environ.get("CARTWISE_SHARED_DATA", Path("..") / "shared" / "data"))


@dataclass(frozen=True, slots=True)
class Record:
    """One event to publish: ``topic_field`` names a :class:`cartwise.settings.Topics` field."""

    topic_field: str
    key: str
    event: ProductUpsert | BehaviorEvent


def rees46_title(brand: str, category: list[str], product_id: str) -> str:
    """Readable title for a REES46 product: "Samsung smartphone", "Kitchen water heater" or "Product 123"."""
    words = [brand.title()] if brand else []
    if category:
        words.append(category[-1].replace("_", " "))
    return " ".join(words) or f"Product {product_id}"


def rees46_records(path: Path | None = None, limit: int | None = None) -> Iterator[Record]:
    """REES46 events in file (event-time) order: a catalog upsert before a product's first behavior event
    and whenever its price changes, then the behavior event itself (``event_id`` = ``rees46-<row>``)."""
    path = path or data_root() / "rees46" / "events-2019-10-01.csv"
    prices: dict[str, str] = {}
    topic_of = {"purchase": "purchases", "cart": "carts", "view": "views"}
    with open(path, newline="") as fh:
        for row_no, row in enumerate(csv.DictReader(fh), start=1):
            if limit is not None and row_no > limit:
                return
            when = datetime.strptime(row["event_time"], "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=timezone.utc)
            pid = row["product_id"]
            if prices.get(pid) != row["price"]:
                prices[pid] = row["price"]
                category = [c for c in row["category_code"].split(".") if c]
                yield Record("catalog", pid, ProductUpsert(
                    event_id=f"rees46-catalog-{pid}-{row_no}", event_time=when, product_id=pid,
                    title=rees46_title(row["brand"], category, pid), brand=row["brand"] or None,
                    category_path=category, price=float(row["price"])))
            yield Record(topic_of[row["event_type"]], row["user_id"], BehaviorEvent(
                event_id=f"rees46-{row_no}", event_time=when, event_type=row["event_type"], user_id=row["user_id"],
                product_id=pid, session_id=row["user_session"] or None))


def _flipkart_path(tree: str, name: str) -> list[str]:
    """Category levels of a Flipkart tree string, without the product-name leaf and cut ("...") nodes."""
    levels = [level.strip() for level in tree.strip('[]"').split(">>")]
    return [lv for lv in levels if lv and not lv.endswith("...") and lv != name.strip()]


def flipkart_records(root: Path | None = None) -> Iterator[Record]:
    """Flipkart catalog upserts (20,000 products); brand and price joined by row order and checked by id."""
    root = root or data_root() / "flipkart"
    with open(root / "products_name_category_tree.csv", newline="") as names, \
            open(root / "products_brand_price_rating.csv", newline="") as details:
        for (uid, name, tree), extra in zip(csv.reader(names), csv.DictReader(details)):
            if extra["uniq_id"] != uid:
                raise ValueError(f"flipkart files out of step at {uid} / {extra['uniq_id']}")
            price = extra["discounted_price"] or extra["retail_price"]
            yield Record("catalog", uid, ProductUpsert(
                event_id=f"flipkart-{uid}", event_time=_EPOCH, product_id=uid, title=name.strip() or uid,
                brand=extra["brand"] or None, category_path=_flipkart_path(tree, name),
                price=float(price) if price else None))


def amazon_records(path: Path | None = None) -> Iterator[Record]:
    """Amazon UK toys catalog upserts (10,000 products); manufacturer as brand, '£' prices parsed."""
    path = path or data_root() / "amazon_uk_toys" / "products.csv"
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            price = row["price"].replace("£", "").replace(",", "").split("-")[0].strip()
            yield Record("catalog", row["uniq_id"], ProductUpsert(
                event_id=f"amazon-{row['uniq_id']}", event_time=_EPOCH, product_id=row["uniq_id"],
                title=row["product_name"].strip() or row["uniq_id"], brand=row["manufacturer"] or None,
                category_path=[c.strip() for c in row["amazon_category_and_sub_category"].split(">") if c.strip()],
                price=float(price) if price else None, in_stock=bool(row["number_available_in_stock"])))


def homedepot_records(path: Path | None = None) -> Iterator[Record]:
    """Home Depot catalog upserts (54,667 products; the data has titles only)."""
    path = path or data_root() / "homedepot" / "products.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            yield Record("catalog", row["product_uid"], ProductUpsert(
                event_id=f"homedepot-{row['product_uid']}", event_time=_EPOCH, product_id=row["product_uid"],
                title=row["product_title"].strip() or row["product_uid"]))


def records(dataset: str) -> Iterator[Record]:
    """Events of ``dataset`` (one of :data:`DATASETS`). Raises ValueError for another name."""
    readers = {"rees46": rees46_records, "flipkart": flipkart_records, "amazon_uk_toys": amazon_records,
               "homedepot": homedepot_records}
    if dataset not in readers:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return readers[dataset]()
