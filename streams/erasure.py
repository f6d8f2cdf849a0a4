"""Removing users: erasure requests (``UserForget`` on the user control topic, ``cartwise users forget``)
and expiry of users inactive for longer than the TTL, so neither the history Table nor the users
collections grow without bound.

Both delete the user's point, with its vector and purchases, from every write target, then the history
from the Table (a changelog tombstone, so the compacted changelog forgets it too). In that order a crash
between the two leaves a history whose user is found again: the redelivered request, or the next expiry
sweep after the Table's recovery, removes it. The other order could leave a point no history points to.

Time here is stream time: the newest event time the worker has seen, not the wall clock, so a replay of
2019 events expires users as live traffic would (Metarank issue #1543 is the failure this avoids)."""

from __future__ import annotations

from typing import Iterable, MutableMapping

from cartwise.personalization import UserHistory
from streams.user_points import UserPoints

SWEEP_FRACTION = 0.01  # sweep every 1% of the TTL of stream time: expiry is at most that late
MIN_SWEEP_S = 60.0


class StreamClock:
    """Stream time and each user's newest event time (s since the epoch), for expiry by TTL ``ttl_s``
    (0: users never expire). Users are found for expiry by a scan of O(users) at most every
    ``max(ttl_s * 1%, 60 s)`` of stream time."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.now = 0.0
        self.last_seen: dict[str, float] = {}
        self._next_sweep = 0.0

    def saw(self, user_id: str, ts: float) -> None:
        """Record an event of ``user_id`` at ``ts`` (s); stream time never moves back."""
        if ts > self.last_seen.get(user_id, float("-inf")):
            self.last_seen[user_id] = ts
        self.now = max(self.now, ts)

    def restore(self, histories: Iterable[tuple[str, UserHistory]]) -> None:
        """Rebuild from the recovered Table: each user's newest kept interaction, stream time their maximum."""
        self.last_seen = {}
        for user_id, history in histories:
            for interaction in history.interactions[-1:]:
                self.saw(user_id, interaction.ts)
        self._next_sweep = 0.0

    def forget(self, user_ids: Iterable[str]) -> None:
        """Stop tracking removed users."""
        for user_id in user_ids:
            self.last_seen.pop(user_id, None)

    def expired(self) -> list[str]:
        """Users whose newest event is more than the TTL behind stream time, when a sweep is due (else
        none); the caller removes them (:func:`delete_user_points`, then :func:`forget_histories`) and calls
        :meth:`forget`."""
        if not self.ttl_s or self.now < self._next_sweep:
            return []
        self._next_sweep = self.now + max(self.ttl_s * SWEEP_FRACTION, MIN_SWEEP_S)
        horizon = self.now - self.ttl_s
        return [user_id for user_id, ts in self.last_seen.items() if ts < horizon]


def delete_user_points(user_ids: list[str], points: UserPoints, models) -> None:
    """Delete the users' points from the users collection of every write target (``models``, ServingModels);
    the first half of a removal (module doc). Blocking index calls."""
    for model in models:
        points.delete(model.users, user_ids)


def forget_histories(user_ids: list[str], histories: MutableMapping) -> None:
    """Delete the users' histories from the Table (tombstones in its changelog), after their points (module
    doc). Users with nothing stored are skipped silently."""
    for user_id in user_ids:
        if histories.get(user_id) is not None:
            del histories[user_id]
