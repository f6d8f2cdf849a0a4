"""Personalization (pure logic): per-user interaction history, the decayed and weighted user vector,
α(n), the fused query, and the user point's payload codec. The stream worker, the gRPC API and the
offline evaluation all use this module, so offline numbers measure the code that serves
(docs/architecture.md, "Personalization").

The history is the durable state (a faust Table with its changelog in Kafka); the user vector is
derived from it and the product vectors of one model version, so it can be rebuilt for any version.

User vector (time decay as in Velkoski et al. 2025, arXiv 2511.00694):
    u = normalize(S),  S = sum_i w(type_i) * 2^(-(t_ref - t_i) / H) * p̂_i,  t_ref = latest t_i
Measuring Δt from the user's latest interaction instead of "now" multiplies every term by the same
factor, which the normalization removes, so the vector needs no refresh as wall-clock time passes.

S is kept incrementally (:func:`accumulate`): each event costs one product vector, O(D), however long
the history, and so does each interaction a full history pushes out (its term is subtracted), so S
always covers exactly the ``max_history`` kept interactions, as a full rebuild (:func:`user_vector`, e.g.
for a new model version) does; the two differ by float rounding only."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import orjson

from cartwise.events import BehaviorEvent
from cartwise.settings import Personalization

_MAX_PURCHASED = 1000


@dataclass(frozen=True, slots=True)
class Interaction:
    """One behavior event as kept in the history; ``ts`` in seconds since the epoch."""

    event_id: str
    product_id: str
    event_type: str
    ts: float


@dataclass(slots=True)
class UserHistory:
    """A user's most recent interactions (time order), recent event ids for deduplication,
    and the products they purchased (for ``exclude_purchased``)."""

    interactions: list[Interaction] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)
    # the stream worker asks for the digest of one history three or four times per batch; apply, the only
    # method that changes a history, clears it
    _digest: str | None = field(default=None, repr=False, compare=False)

    def apply(self, event: BehaviorEvent, max_history: int) -> bool:
        """Add ``event``; returns False when it changes nothing (a duplicate, or older than a full history).

        Idempotent by ``event_id``; an out-of-order event lands at its event-time position."""
        if event.event_id in self.seen or any(i.event_id == event.event_id for i in self.interactions):
            return False
        self._digest = None
        self.seen.append(event.event_id)
        del self.seen[: max(0, len(self.seen) - 4 * max_history)]
        if event.event_type == "purchase" and event.product_id not in self.purchased:
            self.purchased.append(event.product_id)
            del self.purchased[: max(0, len(self.purchased) - _MAX_PURCHASED)]
        item = Interaction(event.event_id, event.product_id, event.event_type, event.event_time.timestamp())
        self.interactions.append(item)
        self.interactions.sort(key=lambda i: (i.ts, i.event_id))
        dropped = self.interactions[: max(0, len(self.interactions) - max_history)]
        del self.interactions[: len(dropped)]
        return item not in dropped or event.event_type == "purchase"

    def find(self, event_id: str) -> Interaction | None:
        """The kept interaction of ``event_id``, if it is in the history."""
        return next((i for i in self.interactions if i.event_id == event_id), None)

    def digest(self) -> str:
        """A fingerprint of what the user vector and payload derive from (kept interactions and purchases):
        a user point carrying the history's digest is up to date with it."""
        if self._digest is None:
            text = "\x1f".join([i.event_id for i in self.interactions] + ["\x1e"] + self.purchased)
            self._digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        return self._digest

    def product_ids(self) -> list[str]:
        """Distinct products in the history."""
        return list(dict.fromkeys(i.product_id for i in self.interactions))

    def to_json(self) -> dict:
        """JSON-ready dict (the table's value)."""
        # rows as tuples (JSON arrays all the same), which the garbage collector stops tracking, unlike lists;
        # seen and purchased copied, since a later apply changes them
        return {"i": [(i.event_id, i.product_id, i.event_type, i.ts) for i in self.interactions],
                "seen": list(self.seen), "purchased": list(self.purchased)}

    @classmethod
    def from_json(cls, data: dict | None) -> "UserHistory":
        """Inverse of :meth:`to_json`; None gives an empty history."""
        if not data:
            return cls()
        return cls([Interaction(*row) for row in data["i"]], list(data["seen"]), list(data["purchased"]))


@dataclass(frozen=True, slots=True)
class UserVector:
    """``vector`` (D,) float32 unit norm = S / ``norm``; ``t_ref`` (s) the time S is referenced to;
    ``n`` interactions that contributed; ``pending`` ones whose product had no vector yet."""

    vector: np.ndarray
    norm: float
    t_ref: float
    n: int
    pending: int


def accumulate(previous: UserVector | None, added: list[tuple[Interaction, np.ndarray]], missing: int,
               params: Personalization, removed: list[tuple[Interaction, np.ndarray]] = ()) -> UserVector | None:
    """Fold interactions with their product vectors (D,) into S, in any order, and take out the terms of
    ``removed`` ones (interactions S holds that a full history pushed out: the oldest, so never the one
    that sets t_ref) (see module doc).

    ``missing`` counts new interactions whose product has no vector yet. Returns None while S is zero."""
    if previous is None and not added:
        return None
    total = previous.vector.astype(np.float64) * previous.norm if previous else 0.0
    t_ref = previous.t_ref if previous else max(i.ts for i, _ in added)
    for item, vector in added:
        if item.ts > t_ref:
            total = total * 2.0 ** (-(item.ts - t_ref) / params.half_life_s)
            t_ref = item.ts
        total = total + _term(item, vector, t_ref, params)
    for item, vector in removed:
        total = total - _term(item, vector, t_ref, params)
    norm = float(np.linalg.norm(total))
    if norm == 0.0:
        return None
    n = (previous.n if previous else 0) + len(added) - len(removed)
    return UserVector((total / norm).astype(np.float32), norm, t_ref, n, (previous.pending if previous else 0) + missing)


def _term(item: Interaction, vector: np.ndarray, t_ref: float, params: Personalization) -> np.ndarray:
    """w(type_i) * 2^(-(t_ref - t_i) / H) * p̂_i, (D,)."""
    return params.weight(item.event_type) * 2.0 ** (-(t_ref - item.ts) / params.half_life_s) * vector


def user_vector(history: UserHistory, product_vectors: dict[str, np.ndarray],
                params: Personalization) -> UserVector | None:
    """Rebuild S from the whole kept history (see module doc), or None when no interaction has a product
    vector yet. ``product_vectors`` maps product_id -> (D,) unit vector."""
    known = [(i, product_vectors[i.product_id]) for i in history.interactions if i.product_id in product_vectors]
    return accumulate(None, known, len(history.interactions) - len(known), params)


@dataclass(frozen=True, slots=True)
class UserPoint:
    """A user as stored in a users collection: the :class:`UserVector` state, the purchased products
    (for ``exclude_purchased``) and the :meth:`UserHistory.digest` of the history it was computed from.
    :meth:`to_payload` / :meth:`from_payload` are the only code that knows the payload's keys."""

    user_id: str
    state: UserVector
    purchased: tuple[str, ...] = ()
    history: str = ""

    def to_payload(self) -> dict:
        """The index payload: ``user_id`` and one JSON string ``state`` holding n, pending, norm, t_ref,
        purchased, the history digest and ``updated_at`` (seconds since the epoch, for operators). One string
        because the Qdrant Edge binding converts a payload key by key: these eight as separate keys cost
        55 us per upserted point, as one string 12 us (measured in issue #13); orjson writes it in 0.5 us,
        the json module in 6."""
        s = self.state
        state = {"n": s.n, "pending": s.pending, "norm": s.norm, "t_ref": s.t_ref, "purchased": self.purchased,
                 "history": self.history, "updated_at": time.time()}
        return {"user_id": self.user_id, "state": orjson.dumps(state).decode()}

    @classmethod
    def from_payload(cls, payload: dict, vector: np.ndarray) -> "UserPoint":
        """Decode a payload written by :meth:`to_payload` with the point's (D,) float32 ``vector``. Raises
        KeyError for a payload that is not a user point's."""
        fields = orjson.loads(payload["state"])
        state = UserVector(vector, float(fields["norm"]), float(fields["t_ref"]), int(fields["n"]),
                           int(fields["pending"]))
        return cls(payload["user_id"], state, tuple(fields.get("purchased", ())), fields.get("history", ""))


def personalization_weight(n: int, params: Personalization) -> float:
    """α(n) = α_max · n / (n + n₀); 0 for n = 0 (a cold user).

    User-preference weighting of the query follows Velkoski et al. 2025 (arXiv 2511.00694, §III)."""
    return params.alpha_max * n / (n + params.n0) if n > 0 else 0.0


def fused_query(query: np.ndarray | None, user: np.ndarray | None, alpha: float) -> np.ndarray:
    """The ANN query vector (D,) float32 for s(q, u, p) = <q̂, p̂> + α <û, p̂>: q̂ + α·û, or û alone when
    there is no query. Raises ValueError when both are None."""
    if query is None and user is None:
        raise ValueError("need a query vector or a user vector")
    if query is None:
        return user
    if user is None or alpha == 0.0:
        return query
    return (query + alpha * user).astype(np.float32)
