"""Collapsing products of identical text, so copies do not fill a page (issue #15).

REES46 titles are brand + category ("Samsung smartphone"), so dozens of products share one text; they get
the same vector and BM25 score, and a query like "electronics" answered ten identical rows. A page keeps the
best-ranked product of each text. Products are identical when their payloads' ``text_digest``
(cartwise.catalog.text_digest of the encoder text) are equal: their vectors cannot say it, since one text
embedded in two batches of different padded lengths differs in the last bits (and int8 quantizes each batch
on its own scale). The ranking asks the engine for :data:`OVERFETCH` times the page, and when collapsing
leaves the page short while the engine had more, asks again for :data:`GROWTH` times as many (up to 1,000):
on REES46 a query like "smartphone" has a handful of distinct texts among its top 30."""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence, TypeVar

OVERFETCH = 3  # engine results per hit shown when collapsing (a page of 10 reads 30)
GROWTH = 4  # each further read, when a collapsed page came out short
MAX_FETCH = 1000

H = TypeVar("H")


def fetch_limits(limit: int, collapse: bool) -> Iterator[int]:
    """How many results to ask the engine for, read after read, to show ``limit`` hits: ``limit`` once when
    not collapsing; else :data:`OVERFETCH` × ``limit``, then :data:`GROWTH` times more, up to MAX_FETCH.
    The caller stops at the first page that :func:`is_complete` says is."""
    fetch = min(MAX_FETCH, limit * OVERFETCH) if collapse else limit
    yield fetch
    while collapse and fetch < MAX_FETCH:
        fetch = min(MAX_FETCH, fetch * GROWTH)
        yield fetch


def is_complete(shown: int, limit: int, returned: int, fetched: int) -> bool:
    """Whether a page of ``shown`` hits from ``returned`` engine results (of ``fetched`` asked) is final: full,
    or the engine had no more to give."""
    return shown >= limit or returned < fetched


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
