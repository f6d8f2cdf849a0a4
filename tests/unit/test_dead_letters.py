"""streams/dead_letters.py and streams/event_counts.py: an invalid record goes to its topic's dead-letter topic
unchanged, with the producer's headers and where it came from, and is counted; a valid one is parsed."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from cartwise.events import EventLimits, UserForget, encode_event, parse_control_event
from streams.dead_letters import DeadLetters
from streams.event_counts import EventCounts


class FakeApp:
    """Records the topics made and what was sent to them."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self.sent: list[tuple[str, dict]] = []

    def topic(self, name, **kwargs):
        self.made.append(name)

        async def send(**message):
            self.sent.append((name, message))

        return SimpleNamespace(send=send)


def event(value: bytes, key: bytes = b"u1", headers=None):
    return SimpleNamespace(key=key, value=value, message=SimpleNamespace(
        topic="control.users", partition=3, offset=41, key=key, value=value, headers=headers))


def test_an_invalid_record_is_dead_lettered_with_its_headers_and_counted_once():
    app, counts = FakeApp(), EventCounts()
    letters = DeadLetters(app, EventLimits(), counts)

    async def parse_twice():
        return [await letters.parse(event(b"not json", headers=[("trace", b"t1")]), parse_control_event)
                for _ in range(2)]

    assert asyncio.run(parse_twice()) == [None, None]
    assert app.made == ["control.users.dlq"]  # the topic is made once
    name, message = app.sent[0]
    assert name == "control.users.dlq" and message["key"] == b"u1" and message["value"] == b"not json"
    headers = dict(message["headers"])
    assert headers["trace"] == b"t1" and headers["source_topic"] == b"control.users"
    assert headers["source_partition"] == b"3" and headers["source_offset"] == b"41" and headers["error"]
    assert counts.dead_lettered == 2 and counts.by_topic["control.users", "dead_lettered"] == 2
    assert counts.consumed == 2


def test_a_valid_record_is_parsed_and_nothing_is_sent():
    app, counts = FakeApp(), EventCounts()
    value = encode_event(UserForget(event_id="f1", event_time=datetime(2026, 1, 1, tzinfo=timezone.utc), user_id="u1"))
    parsed = asyncio.run(DeadLetters(app, EventLimits(), counts).parse(event(value), parse_control_event))
    assert parsed is not None and parsed.user_id == "u1" and app.sent == [] and counts.consumed == 0


def test_counts_add_to_the_total_and_the_topic():
    counts = EventCounts()
    counts.add("catalog.products", "applied", 3)
    counts.add("behavior.carts", "stale")
    assert (counts.applied, counts.stale, counts.dead_lettered, counts.consumed) == (3, 1, 0, 4)
    assert counts.by_topic == {("catalog.products", "applied"): 3, ("behavior.carts", "stale"): 1}
    with pytest.raises(KeyError):
        counts.add("behavior.carts", "lost")
