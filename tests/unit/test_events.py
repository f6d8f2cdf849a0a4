"""Event schemas: parse_catalog_event / parse_behavior_event."""

import json

import pytest

from cartwise.events import (
    BehaviorEvent,
    InvalidEvent,
    ProductDelete,
    ProductUpsert,
    encode_event,
    parse_behavior_event,
    parse_catalog_event,
)

T = "2019-10-01T00:00:00+00:00"


def upsert(**over) -> bytes:
    doc = {"event_id": "e1", "event_time": T, "op": "upsert", "product_id": "p1", "title": "Phone",
           "brand": "Acme", "category_path": ["electronics", "phone"], "price": 9.5}
    doc.update(over)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def behavior(**over) -> bytes:
    doc = {"event_id": "b1", "event_time": T, "event_type": "view", "user_id": "u1", "product_id": "p1"}
    doc.update(over)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def test_valid_upsert():
    event = parse_catalog_event(upsert())
    assert isinstance(event, ProductUpsert)
    assert (event.product_id, event.title, event.brand, event.price) == ("p1", "Phone", "Acme", 9.5)
    assert event.category_path == ["electronics", "phone"]
    assert event.in_stock is True
    assert event.event_time.utcoffset().total_seconds() == 0


def test_valid_delete():
    event = parse_catalog_event(json.dumps({"event_id": "e2", "event_time": T, "op": "delete",
                                            "product_id": "p1"}).encode())
    assert isinstance(event, ProductDelete) and event.product_id == "p1"


def test_encode_roundtrip():
    event = parse_catalog_event(upsert())
    assert parse_catalog_event(encode_event(event)) == event


@pytest.mark.parametrize("field", ["title", "product_id", "event_id", "event_time"])
def test_upsert_missing_field_named(field):
    with pytest.raises(InvalidEvent) as err:
        parse_catalog_event(upsert(**{field: ...}))
    assert field in err.value.reason


@pytest.mark.parametrize("field", ["user_id", "product_id", "event_type"])
def test_behavior_missing_field_named(field):
    with pytest.raises(InvalidEvent) as err:
        parse_behavior_event(behavior(**{field: ...}), "view")
    assert field in err.value.reason


def test_valid_behavior():
    event = parse_behavior_event(behavior(event_type="purchase", session_id="s"), "purchase")
    assert isinstance(event, BehaviorEvent)
    assert (event.event_type, event.user_id, event.product_id, event.session_id) == ("purchase", "u1", "p1", "s")


def test_wrong_event_type_for_topic():
    with pytest.raises(InvalidEvent) as err:
        parse_behavior_event(behavior(event_type="cart"), "purchase")
    assert "event_type" in err.value.reason


def test_unknown_event_type():
    with pytest.raises(InvalidEvent, match="event_type"):
        parse_behavior_event(behavior(event_type="click"), "view")


@pytest.mark.parametrize("raw", [b"not json", b"{", b"\xff\xfe", b"[]"])
def test_non_json_rejected(raw):
    with pytest.raises(InvalidEvent):
        parse_catalog_event(raw)
    with pytest.raises(InvalidEvent):
        parse_behavior_event(raw, "view")


def test_none_value_rejected():
    with pytest.raises(InvalidEvent):
        parse_catalog_event(None)
    with pytest.raises(InvalidEvent):
        parse_behavior_event(None, "view")


def test_naive_datetime_rejected():
    with pytest.raises(InvalidEvent) as err:
        parse_catalog_event(upsert(event_time="2019-10-01T00:00:00"))
    assert "event_time" in err.value.reason
    with pytest.raises(InvalidEvent, match="event_time"):
        parse_behavior_event(behavior(event_time="2019-10-01T00:00:00"), "view")


@pytest.mark.parametrize("price", [b"-0.01", b"Infinity", b"-Infinity", b"NaN", b'"inf"', b"1e999"])
def test_bad_price_rejected(price):
    raw = upsert().replace(b'"price": 9.5', b'"price": ' + price)
    assert price in raw
    with pytest.raises(InvalidEvent) as err:
        parse_catalog_event(raw)
    assert "price" in err.value.reason


def test_zero_price_and_null_price_ok():
    assert parse_catalog_event(upsert(price=0)).price == 0.0
    assert parse_catalog_event(upsert(price=None)).price is None


def test_extra_field_rejected():
    with pytest.raises(InvalidEvent) as err:
        parse_catalog_event(upsert(color="red"))
    assert "color" in err.value.reason
    with pytest.raises(InvalidEvent, match="color"):
        parse_behavior_event(behavior(color="red"), "view")


def test_wrong_schema_version_rejected():
    with pytest.raises(InvalidEvent, match="schema_version"):
        parse_catalog_event(upsert(schema_version=2))


def test_empty_category_level_rejected():
    with pytest.raises(InvalidEvent, match="category_path"):
        parse_catalog_event(upsert(category_path=["a", ""]))


def test_invalid_event_is_value_error():
    assert issubclass(InvalidEvent, ValueError)
    assert InvalidEvent("x: y").reason == "x: y"
