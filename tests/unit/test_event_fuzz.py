"""Property-based fuzzing of consumed records (hypothesis): every malformed shape (wrong types, missing
and unknown fields, unknown schema_version, far-future event times, oversized values, non-UTF-8 keys or
values, keys that are not the event's id) is rejected with InvalidEvent and a reason naming what is wrong
(what the worker writes to the dead-letter topic), and never with any other exception."""

import json
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartwise.events import (
    BehaviorEvent,
    EventLimits,
    InvalidEvent,
    UserForget,
    encode_event,
    parse_behavior_event,
    parse_catalog_event,
    parse_control_event,
    parse_record,
)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
LIMITS = EventLimits(max_bytes=4096, max_ahead_s=3600.0)
PARSERS = {"catalog": parse_catalog_event, "view": partial(parse_behavior_event, expected_type="view"),
           "control": parse_control_event}
VALID = {
    "catalog": {"event_id": "e1", "event_time": "2025-12-31T00:00:00Z", "op": "upsert", "product_id": "p1",
                "title": "Cordless drill", "brand": "Acme", "category_path": ["tools"], "price": 99.0},
    "view": {"event_id": "b1", "event_time": "2025-12-31T00:00:00Z", "event_type": "view", "user_id": "u1",
             "product_id": "p1"},
    "control": {"event_id": "f1", "event_time": "2025-12-31T00:00:00Z", "op": "forget", "user_id": "u1"},
}
KEYS = {"catalog": b"p1", "view": b"u1", "control": b"u1"}
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=8)


def check(kind: str, key: bytes | None, value: bytes | None) -> None:
    """Parse like the worker; only InvalidEvent with a non-empty reason may escape."""
    try:
        parse_record(key, value, PARSERS[kind], LIMITS, now_s=NOW.timestamp())
    except InvalidEvent as err:
        assert err.reason.strip()


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_records_pass(kind):
    event = parse_record(KEYS[kind], json.dumps(VALID[kind]).encode(), PARSERS[kind], LIMITS, now_s=NOW.timestamp())
    assert event.key == KEYS[kind].decode()


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(VALID)), data=st.data())
def test_mutated_fields_are_rejected_with_a_reason_or_accepted(kind, data):
    doc = dict(VALID[kind])
    for name in data.draw(st.lists(st.sampled_from(sorted(doc) + ["extra", "schema_version"]), max_size=3)):
        if data.draw(st.booleans()):
            doc.pop(name, None)
        else:
            doc[name] = data.draw(JSON_VALUES)
    check(kind, KEYS[kind], json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(sorted(VALID)), key=st.none() | st.binary(max_size=40),
       value=st.none() | st.binary(max_size=6000))
def test_arbitrary_bytes_are_rejected_with_a_reason(kind, key, value):
    with pytest.raises(InvalidEvent):
        parse_record(key, value, PARSERS[kind], LIMITS, now_s=NOW.timestamp())


@pytest.mark.parametrize(("key", "value", "reason"), [
    (b"u1", json.dumps({**VALID["view"], "schema_version": 2}).encode(), "schema_version"),
    (b"u1", json.dumps({**VALID["view"], "event_time": "2026-01-02T00:00:00Z"}).encode(), "event_time"),
    (b"u1", json.dumps({**VALID["view"], "query": "x" * 5000}).encode(), "bytes, over the 4,096-byte limit"),
    (b"\xff\xfe", json.dumps(VALID["view"]).encode(), "key: not UTF-8"),
    (b"u2", json.dumps(VALID["view"]).encode(), "key: 'u2' is not the event's id 'u1'"),
    (None, json.dumps(VALID["view"]).encode(), "key: None"),
    (b"u1", b"\xff" + json.dumps(VALID["view"]).encode(), "Invalid JSON"),
    (b"u1", json.dumps({**VALID["view"], "user_id": 7}).encode(), "user_id"),
])
def test_each_malformed_shape_names_its_fault(key, value, reason):
    with pytest.raises(InvalidEvent) as err:
        parse_record(key, value, PARSERS["view"], LIMITS, now_s=NOW.timestamp())
    assert reason in err.value.reason


def test_event_time_within_the_allowed_skew_passes():
    ahead = NOW + timedelta(seconds=LIMITS.max_ahead_s - 1)
    event = BehaviorEvent(event_id="b", event_time=ahead, event_type="view", user_id="u1", product_id="p")
    assert parse_record(b"u1", encode_event(event), PARSERS["view"], LIMITS, now_s=NOW.timestamp()) == event


def test_erasure_request_round_trips():
    request = UserForget(event_id="f", event_time=NOW, user_id="u 1")
    assert parse_record(b"u 1", encode_event(request), parse_control_event, LIMITS, now_s=NOW.timestamp()) == request
