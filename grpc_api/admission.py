"""Adaptive admission: a concurrency limit that follows the measured latency, so that under overload the
admitted requests keep their latency and the rest are refused at once (RESOURCE_EXHAUSTED), not queued.

The method is the gradient limit of Netflix's concurrency-limits (``GradientLimit``; Gradient2 compares
with a long average instead) and of Envoy's adaptive concurrency filter, both after TCP Vegas (Brakmo &
Peterson, 1995): every window of requests, with ``sample`` the window's mean latency and ``baseline`` the
no-load latency,

    gradient  = clamp(tolerance * baseline / sample, 0.5, 1)
    new_limit = limit * gradient + sqrt(limit)          (sqrt(limit): the queue the limit allows for)
    limit     = clamp((1 - smoothing) * limit + smoothing * new_limit, min_limit, max_limit)

so the limit rises while latency stays within ``tolerance`` x the no-load latency and falls (by about a
tenth per window at most) when it grows beyond. As in Netflix's limit, it does not rise from a window whose peak
concurrency stayed under half the limit: a limit no load has tried says nothing about the latency it
causes.

The no-load latency: Envoy measures it by dropping the limit to ``min_concurrency`` now and then, which
refuses requests at any load; a long-window minimum of all windows (Netflix's ``rtt_noload``) creeps up
under sustained overload, since every window then queues. Here it is measured passively from the same
concurrency Envoy probes at: the mean latency of the last :data:`BASELINE_REQUESTS` requests admitted with
fewer than ``min_limit`` requests in flight (from :data:`BASELINE_MIN_REQUESTS` of them on; the limit
stays at its initial value before). Under sustained overload such requests are rare and the
estimate keeps its last value, so it does not creep up with the queue. A lasting rise of the no-load
latency during an overload (a bigger catalog, a heavier model) holds the limit low (the gradient alone
brings it down to about 4: 0.5 x 4 + sqrt(4) = 4) until the load eases and requests find the server
idle again: a safe error, since a few requests in flight keep two cores busy.

The tolerance absorbs the no-load latency's own spread (query-cache hits and misses, personalized or
not): with a tolerance of 2 and the sqrt(limit) queue, a limit of L settles where the window's mean
latency is about 2 / (1 - 1/sqrt(L)) x the no-load latency."""

from __future__ import annotations

import math
from collections import deque

WINDOW_REQUESTS = 20  # latencies per update: ~0.1 s at 200/s, enough that one slow request does not steer
BASELINE_REQUESTS = 100  # no-load latencies averaged for the baseline ...
BASELINE_MIN_REQUESTS = 20  # ... and how many it needs before it steers (a few cold first requests do not)
SMOOTHING = 0.2  # Netflix GradientLimit's default
INITIAL_LIMIT = 8  # the former fixed limit (docs/benchmarks.md, "Overload"); clamped to the bounds


class AdaptiveLimit:
    """The admission limit and its controller (pure logic: no clock, no I/O; one event loop uses it).

    ``min_limit`` <= ``limit`` <= ``max_limit`` requests in flight; ``tolerance`` (> 1) is the latency, as a
    multiple of the no-load latency, up to which the limit may rise. :meth:`try_acquire` admits a request
    or refuses it; every admitted request must be :meth:`release`\\ d with its latency (seconds). Raises
    ValueError for bounds that are not 1 <= min_limit <= max_limit or a tolerance <= 1."""

    def __init__(self, min_limit: int, max_limit: int, tolerance: float) -> None:
        if not 1 <= min_limit <= max_limit or tolerance <= 1.0:
            raise ValueError(f"need 1 <= min_limit <= max_limit and tolerance > 1, got {min_limit}, {max_limit}, "
                             f"{tolerance}")
        self.min_limit, self.max_limit, self.tolerance = min_limit, max_limit, tolerance
        self._limit = float(min(max(INITIAL_LIMIT, min_limit), max_limit))
        self.in_flight = 0
        self._window: list[float] = []
        self._peak = 0  # the most requests in flight since the window began
        self._dropped = False  # whether a request of the window hit its deadline
        self._no_load: deque[float] = deque(maxlen=BASELINE_REQUESTS)

    @property
    def limit(self) -> int:
        """Requests that may be in flight now."""
        return int(self._limit)

    @property
    def baseline_s(self) -> float | None:
        """The no-load latency estimate (seconds), None until :data:`BASELINE_MIN_REQUESTS` requests were
        admitted below ``min_limit``; until then the limit does not move."""
        if len(self._no_load) < BASELINE_MIN_REQUESTS:
            return None
        return sum(self._no_load) / len(self._no_load)

    def try_acquire(self) -> tuple[bool, bool]:
        """Admit one request if fewer than :attr:`limit` are in flight. Returns (admitted, no_load): pass
        ``no_load`` to :meth:`release`, it says the request was admitted below ``min_limit``."""
        if self.in_flight >= self.limit:
            return False, False
        no_load = self.in_flight < self.min_limit
        self.in_flight += 1
        self._peak = max(self._peak, self.in_flight)
        return True, no_load

    def release(self, latency_s: float, no_load: bool, dropped: bool = False) -> None:
        """One admitted request finished after ``latency_s``; ``dropped``: it hit its deadline first. Every
        :data:`WINDOW_REQUESTS` of them update the limit; a window with a drop takes the steepest fall
        (gradient 0.5), as TCP Vegas and Netflix's limits decrease on a drop: the request waited longer than
        its client would, partly before admission, where the handler cannot time it."""
        self.in_flight -= 1
        if no_load and not dropped:
            self._no_load.append(latency_s)
        self._window.append(latency_s)
        self._dropped = self._dropped or dropped
        if len(self._window) >= WINDOW_REQUESTS:
            self._update(sum(self._window) / len(self._window), self._dropped)
            self._window, self._peak, self._dropped = [], self.in_flight, False

    def _update(self, sample_s: float, dropped: bool) -> None:
        baseline = self.baseline_s
        if baseline is None or sample_s <= 0.0:
            return
        gradient = 0.5 if dropped else min(1.0, max(0.5, self.tolerance * baseline / sample_s))
        target = self._limit * gradient + math.sqrt(self._limit)
        if target > self._limit and 2 * self._peak < self._limit:
            return  # the load did not try this limit: no evidence to raise it
        smoothed = (1 - SMOOTHING) * self._limit + SMOOTHING * target
        self._limit = min(float(self.max_limit), max(float(self.min_limit), smoothed))
