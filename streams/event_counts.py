"""The stream worker's counts of consumed events by outcome, the source of its metrics (cartwise/metrics.py)."""

from __future__ import annotations

from collections import Counter

OUTCOMES = ("applied", "stale", "dead_lettered")


class EventCounts:
    """Events consumed since start, each counted once whatever the number of write targets: ``applied``
    (erasure requests included), ``stale`` (older than what is stored, or duplicates), ``dead_lettered``
    (invalid), and ``by_topic``: (topic, outcome) -> events. The totals are plain ints so that a metrics
    thread reads them without iterating a mapping the event loop may be changing."""

    def __init__(self) -> None:
        self.applied = self.stale = self.dead_lettered = 0
        self.by_topic: Counter[tuple[str, str]] = Counter()

    def add(self, topic: str, outcome: str, events: int = 1) -> None:
        """Count ``events`` of ``topic`` with ``outcome`` (one of :data:`OUTCOMES`; KeyError otherwise)."""
        if outcome not in OUTCOMES:
            raise KeyError(outcome)
        setattr(self, outcome, getattr(self, outcome) + events)
        self.by_topic[topic, outcome] += events

    @property
    def consumed(self) -> int:
        """Events consumed since start: applied + stale + dead-lettered."""
        return self.applied + self.stale + self.dead_lettered
