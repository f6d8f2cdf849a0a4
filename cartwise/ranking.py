"""The ranking profile: the one definition of how a hybrid ranking scores and how deep it reads.

The fused score of a product p for a query is linear in its two sides (docs/architecture.md, "Hybrid
retrieval"):

    s = (1 − w)·⟨dense, p̂⟩ + w·κ·BM25(q, p),   w in [0, 1] the lexical side's share, κ > 0 putting BM25 on the
                                                 inner product's scale.

This module is where that formula is written: :func:`fusion_coefficients` gives the two sides' factors, which
the engine backends (cartwise/index/edge.py, server.py) translate into their score-formula query,
:func:`fuse` evaluates it (the trainer's exact proxy, trainer/validation.py and second_stage.py), and
:func:`lexical_part` inverts it (a hit's BM25 from its fused score and vector, cartwise/index/base.py).

:class:`RankingProfile` holds the parameters: w, κ and BM25's k1, b and avgdl (from the settings,
:meth:`RankingProfile.from_settings`), the candidates each side contributes before fusion, and
:class:`FetchDepths`, how many results a page reads from the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from cartwise.settings import Lexical

A = TypeVar("A")  # a float or an ndarray of them: the formula is elementwise


@dataclass(frozen=True, slots=True)
class FetchDepths:
    """How many engine results a page reads: offset + limit text groups, one read (cartwise/groups.py), at
    most ``most`` (which bounds offset + limit of a request). A sorted, boosted or faceted page works on a
    candidate set of the ``candidate_set`` most relevant products, read once (cartwise/merchandising.py)."""

    most: int = 1000
    candidate_set: int = 200


FETCH = FetchDepths()  # the service's fetch depths


@dataclass(frozen=True, slots=True)
class RankingProfile:
    """Everything a ranking is scored and read by: the fusion's ``lexical_weight`` w and ``lexical_scale`` κ,
    BM25's ``k1``, ``b`` and ``avg_doc_len`` (they shape the indexed vectors, cartwise/lexical.py), the
    ``candidates`` taken from each side before fusion, and the ``fetch`` depths of a page."""

    lexical_weight: float
    lexical_scale: float
    k1: float
    b: float
    avg_doc_len: float
    candidates: int
    fetch: FetchDepths = field(default=FETCH)

    @classmethod
    def from_settings(cls, lexical: Lexical) -> "RankingProfile":
        """The profile of the ``lexical`` settings (``CARTWISE_LEXICAL_*``)."""
        return cls(lexical.weight, lexical.scale, lexical.k1, lexical.b, lexical.avg_doc_len, lexical.candidates)


def fusion_coefficients(lexical_weight: float, lexical_scale: float) -> tuple[float, float]:
    """(factor of BM25, factor of the dense inner product) of the fused score, for w = ``lexical_weight``
    and κ = ``lexical_scale``: (w·κ, 1 − w)."""
    return lexical_weight * lexical_scale, 1.0 - lexical_weight


def fuse(dense: A, bm25: A, lexical_weight: float, lexical_scale: float) -> A:
    """The fused score of inner products ``dense`` and BM25 scores ``bm25`` (floats, or arrays of one shape,
    elementwise)."""
    lexical_factor, dense_factor = fusion_coefficients(lexical_weight, lexical_scale)
    return dense_factor * dense + lexical_factor * bm25


def lexical_part(fused: float, dense: float, lexical_weight: float, lexical_scale: float) -> float:
    """BM25 of a hit from its ``fused`` score and its ``dense`` inner product (:func:`fuse` inverted); 0 when
    w = 0 (the fused score holds no BM25) and never below 0 (float rounding)."""
    lexical_factor, dense_factor = fusion_coefficients(lexical_weight, lexical_scale)
    if lexical_factor == 0.0:
        return 0.0
    return max(0.0, (fused - dense_factor * dense) / lexical_factor)


def prefetch_depth(candidates: int, limit: int) -> int:
    """How many results each side of a hybrid query prefetches for ``limit`` fused hits: ``candidates``, or
    ``limit`` when more. Their union (at most twice that) is rescored whole, so every candidate gets both
    sides' scores."""
    return max(candidates, limit)
