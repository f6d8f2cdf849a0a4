"""Checking each consumed record before it applies, and sending one that fails to its dead-letter topic.

A record that fails ``cartwise.events.parse_record`` (its schema, size, key, event time) goes to
``<topic>.dlq`` unchanged, with the producer's own headers (a dead letter must carry everything needed to
resend it) and ``error``, ``source_topic``, ``source_partition``, ``source_offset``; the agent carries on."""

from __future__ import annotations

import logging
from typing import Any, Callable

import faust

from cartwise.events import EventLimits, InvalidEvent, parse_record
from cartwise.settings import Topics
from streams.event_counts import EventCounts

log = logging.getLogger(__name__)


class DeadLetters:
    """Parses the records of ``app``'s agents within ``limits``; dead-letters the invalid ones (counted in
    ``counts`` as ``dead_lettered``) through ``app``'s producer."""

    def __init__(self, app: faust.App, limits: EventLimits, counts: EventCounts) -> None:
        self.app, self.limits, self.counts = app, limits, counts
        self._topics: dict[str, faust.TopicT] = {}

    async def parse(self, event: faust.EventT, parser: Callable[[Any], Any]) -> Any | None:
        """``event``'s record parsed by ``parser`` (``parse_record``'s), or None once it was dead-lettered."""
        try:
            return parse_record(event.key, event.value, parser, self.limits)
        except InvalidEvent as err:
            await self.send(event, err.reason)
            return None

    async def send(self, event: faust.EventT, reason: str) -> None:
        """Send ``event``'s record to its topic's dead-letter topic with ``reason`` (module doc)."""
        message = event.message
        log.warning("dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        name = Topics.dead_letter(message.topic)
        dlq = self._topics.get(name) or self._topics.setdefault(
            name, self.app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw"))
        headers = list(message.headers.items() if isinstance(message.headers, dict) else message.headers or [])
        headers += [("error", reason.encode()), ("source_topic", message.topic.encode()),
                    ("source_partition", str(message.partition).encode()),
                    ("source_offset", str(message.offset).encode())]
        await dlq.send(key=message.key, value=message.value, headers=headers)
        self.counts.add(message.topic, "dead_lettered")
