"""Dataset readers over the real shared data (skipped where ../shared/data is absent)."""

from pathlib import Path

import pytest

from cartwise.datasets import (
    amazon_records,
    flipkart_records,
    homedepot_records,
    records,
    rees46_records,
    rees46_title,
)
from cartwise.events import BehaviorEvent, ProductUpsert

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent")
    return DATA


@pytest.fixture(scope="module")
def rees46(data):
    return list(rees46_records(data / "rees46" / "events-2019-10-01.csv"))


@pytest.fixture(scope="module")
def flipkart(data):
    return list(flipkart_records(data / "flipkart"))


def test_rees46_counts_and_unique_ids(rees46):
    behavior = [r for r in rees46 if isinstance(r.event, BehaviorEvent)]
    assert len(behavior) == 13_969
    ids = [r.event.event_id for r in rees46]
    assert len(ids) == len(set(ids))
    assert {r.topic_field for r in behavior} == {"purchases", "carts", "views"}
    topic_of = {"purchase": "purchases", "cart": "carts", "view": "views"}
    assert all(topic_of[r.event.event_type] == r.topic_field and r.key == r.event.user_id for r in behavior)


def test_rees46_catalog_before_first_behavior(rees46):
    known: set[str] = set()
    for r in rees46:
        if r.topic_field == "catalog":
            assert isinstance(r.event, ProductUpsert) and r.key == r.event.product_id
            known.add(r.event.product_id)
        else:
            assert r.event.product_id in known, r.event.event_id


def test_rees46_event_time_order_and_price_tracking(rees46):
    times = [r.event.event_time for r in rees46]
    assert times == sorted(times)
    assert all(t.tzinfo is not None for t in times)
    price: dict[str, float] = {}
    for r in rees46:
        if r.topic_field == "catalog":
            assert price.get(r.event.product_id) != r.event.price  # only on first sighting or a change
            price[r.event.product_id] = r.event.price


def test_rees46_limit(data):
    got = list(rees46_records(data / "rees46" / "events-2019-10-01.csv", limit=10))
    assert sum(isinstance(r.event, BehaviorEvent) for r in got) == 10


def test_rees46_title():
    assert rees46_title("samsung", ["electronics", "smartphone"], "1") == "Samsung smartphone"
    assert rees46_title("", ["appliances", "kitchen", "water_heater"], "1") == "water heater"
    assert rees46_title("", [], "123") == "Product 123"


def test_flipkart_products(flipkart):
    assert len(flipkart) == 20_000
    assert all(isinstance(r.event, ProductUpsert) and r.topic_field == "catalog" for r in flipkart)
    assert len({r.event.product_id for r in flipkart}) == 20_000
    with_path = sum(bool(r.event.category_path) for r in flipkart)
    assert with_path / len(flipkart) > 0.9
    for r in flipkart:
        assert not any(level.endswith("...") for level in r.event.category_path), r.event.product_id
        assert r.event.title.strip() not in r.event.category_path
        assert all(level == level.strip() and level for level in r.event.category_path)


def test_flipkart_has_prices_and_brands(flipkart):
    assert sum(r.event.price is not None for r in flipkart) / len(flipkart) > 0.9
    assert sum(r.event.brand is not None for r in flipkart) > 0


def test_amazon_products(data):
    got = list(amazon_records(data / "amazon_uk_toys" / "products.csv"))
    assert len(got) == 10_000
    assert len({r.event.product_id for r in got}) == 10_000
    assert sum(bool(r.event.category_path) for r in got) / len(got) > 0.9
    assert all(r.event.price is None or r.event.price >= 0 for r in got)
    assert any(r.event.in_stock for r in got) and any(not r.event.in_stock for r in got)


def test_homedepot_products(data):
    got = list(homedepot_records(data / "homedepot" / "products.csv"))
    assert len(got) == 54_667 and len({r.key for r in got}) == 54_667
    assert all(r.topic_field == "catalog" and r.event.product_id == r.key and r.event.title for r in got)


def test_records_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        records("nope")
