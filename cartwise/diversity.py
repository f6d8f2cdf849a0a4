"""Collapsing products of identical text, so copies do not fill a page (issue #15).

REES46 titles are brand + category ("Samsung smartphone"), so dozens of products share one text; the
encoder gives them bit-identical vectors and BM25 identical scores, and a query like "electronics" answered
ten identical rows. A page keeps the best-ranked product of each text: products are identical when their
dense vectors are bit-identical, which is exactly "the encoder saw the same text" (no payload field holds
the full encoder text; titles alone would also merge products whose descriptions differ). The ranking
asks the engine for :data:`OVERFETCH` times the page so collapsing still fills it."""

from __future__ import annotations

from typing import Iterable, Sequence, TypeVar

import numpy as np

OVERFETCH = 3  # engine results per hit shown when collapsing (a page of 10 reads 30)

H = TypeVar("H")


def fetch_limit(limit: int, collapse: bool, cap: int = 1000) -> int:
    """How many results to ask the engine for to show ``limit`` hits (at most ``cap``)."""
    return min(cap, limit * OVERFETCH) if collapse else limit


def collapse_identical(hits: Sequence[H], vectors: Iterable[np.ndarray | None], limit: int,
                       seen: Iterable[np.ndarray] = ()) -> list[H]:
    """The first ``limit`` of ``hits`` (best first) whose (D,) ``vectors`` differ bit for bit from every
    earlier hit's and from each of ``seen`` (e.g. the product SimilarProducts starts from). A hit without a
    vector is kept."""
    keys = {np.asarray(v, dtype=np.float32).tobytes() for v in seen}
    kept: list[H] = []
    for hit, vector in zip(hits, vectors):
        if vector is not None:
            key = np.asarray(vector, dtype=np.float32).tobytes()
            if key in keys:
                continue
            keys.add(key)
        kept.append(hit)
        if len(kept) == limit:
            break
    return kept
