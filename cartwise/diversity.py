"""Collapsing products of identical text, so copies do not fill a page (issue #15).

REES46 titles are brand + category ("Samsung smartphone"), so dozens of products share one text; they get
the same vector and BM25 score, and a query like "electronics" answered ten identical rows. A page keeps the
best-ranked product of each text. Products are identical when their payloads' ``text_digest``
(cartwise.catalog.text_digest of the encoder text) are equal: their vectors cannot say it, since one text
embedded in two batches of different padded lengths differs in the last bits (and int8 quantizes each batch
on its own scale). A ranked page collapses in the engine read itself, by reading the text groups
(cartwise/groups.py); the popular page, which reads products by id, collapses here (cartwise/page.py)."""

from __future__ import annotations

from typing import Iterable, Sequence, TypeVar

H = TypeVar("H")


def collapse_identical(hits: Sequence[H], keys: Iterable[str | None], limit: int, seen: Iterable[str] = ()) -> list[H]:
    """The first ``limit`` of ``hits`` (best first) whose text ``keys`` differ from every earlier hit's and
    from ``seen`` (e.g. the product SimilarProducts starts from). A hit without a key is kept."""
    taken = set(seen)
    kept: list[H] = []
    for hit, key in zip(hits, keys):
        if key is not None:
            if key in taken:
                continue
            taken.add(key)
        kept.append(hit)
        if len(kept) == limit:
            break
    return kept
