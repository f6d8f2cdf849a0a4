"""Text groups: the products of one identical text, indexed once, so that a page is one engine read
(issue #31; docs/architecture.md, "Diversity, similar products, cold start").

REES46 names products by brand + category, so many share one text (5,541 products, 1,988 texts, up to 102
of one); they share one vector and one BM25 score. Searching one point per product and collapsing
afterwards (cartwise/diversity.py) asked the engine again and again for deeper results (30, 120, 480, then
1,000) while a page came out short. Each model version therefore also has a groups collection
(``groups_vN``, cartwise.lifecycle): one point per text digest, with the text's dense and BM25 vectors, the
fields its products share (title, brand, category path, the digest) and its products as the objects of
``members`` (point id, product id, price, stock, update time), in point-id order. The page pipeline reads
it once: every group the engine returns has a product that matches the whole filter (the product fields are
a nested condition, :attr:`cartwise.index.SearchFilter.grouped`), so ``limit`` groups fill a page of
``limit`` products, one per text (:func:`products_of`); ``keep_duplicates`` shows all of a group's matching
products. BM25's IDF is the engine's over the groups, that is over distinct texts.

The products collection stays the record of each product (lookups by id: user vectors, SimilarProducts'
own product, the popular products, facets). Groups are derived from it: :func:`upsert_products` and
:func:`delete_products` write products and then rewrite their texts' groups from what the products
collection holds with those digests (:func:`regroup`). Every writer of a version's catalog goes through
them (the stream worker's catalog agent, a swap's backfill, a repair, the offline evaluation's index), so
a group is as current as the last write of its text. Two processes writing products of one text at the same
moment over a Qdrant server may leave its group without one of them until the text's next write; one
process never does (its writes of a chunk and its regroup run without yielding)."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from cartwise.catalog import point_id
from cartwise.index import MEMBERS, TEXT_DIGEST, IndexHit, IndexPoint, SearchFilter, VectorIndex
from cartwise.index.base import stock_keyword

MEMBER_ID = "id"  # a member's product point id
MEMBER_FIELDS = ("product_id", "price", "in_stock", "stock", "updated_at")  # a product's own payload fields
MAX_MEMBERS = 10_000  # products of one text read to regroup it (REES46's largest text has 102)
TEXTS_PER_READ = 256  # texts whose products one read of the products collection fetches


def group_id(digest: str) -> str:
    """The point id (UUIDv5 string) of the group of text digest ``digest``."""
    return point_id(f"text:{digest}")


def group_payload(products: Sequence[IndexHit | IndexPoint]) -> dict:
    """The payload of the group of ``products`` (hits or points of one text digest with their product
    payloads, at least one, all sharing the fields but :data:`MEMBER_FIELDS`): those fields, and ``members``
    (:func:`members_of`)."""
    shared = {key: value for key, value in products[0].payload.items() if key not in MEMBER_FIELDS}
    return {**shared, MEMBERS: members_of(products)}


def members_of(products: Sequence[IndexHit | IndexPoint]) -> list[dict]:
    """The ``members`` of the group of ``products``: one object per product, its point id and
    :data:`MEMBER_FIELDS`, in point-id order."""
    return [{MEMBER_ID: hit.id, **{key: hit.payload[key] for key in MEMBER_FIELDS if key in hit.payload}}
            for hit in sorted(products, key=lambda hit: hit.id)]


def group_points(products: Sequence[IndexPoint]) -> list[IndexPoint]:
    """The groups of product points ``products`` taken alone (a whole catalog at once): one per text digest,
    with the dense and BM25 vectors of its first product in ``products``."""
    by_text: dict[str, list[IndexPoint]] = defaultdict(list)
    for point in products:
        by_text[point.payload[TEXT_DIGEST]].append(point)
    return [IndexPoint(group_id(d), texts[0].vector, group_payload(texts), texts[0].lexical) for d, texts in by_text.items()]


def regroup(index: VectorIndex, products: str, groups: str, digests: Iterable[str],
            written: Mapping[str, IndexPoint]) -> None:
    """Rewrite the groups of text ``digests`` in ``groups`` from the products ``products`` holds with them:
    a text without products loses its group; one with a point in ``written`` (digest -> a product point just
    written, whose dense and BM25 vectors the group takes) is upserted whole; any other keeps its vectors and
    gets its members anew (a missing one stays missing). Raises KeyError for a missing collection."""
    digests = sorted(set(digests))
    by_text: dict[str, list[IndexHit]] = defaultdict(list)
    for start in range(0, len(digests), TEXTS_PER_READ):
        chunk = digests[start:start + TEXTS_PER_READ]
        for hit in index.scroll(products, MAX_MEMBERS * len(chunk), SearchFilter(texts=frozenset(chunk))):
            by_text[hit.payload[TEXT_DIGEST]].append(hit)
    gone = [group_id(d) for d in digests if not by_text[d]]
    index.delete(groups, gone)
    index.upsert(groups, [IndexPoint(group_id(d), written[d].vector, group_payload(by_text[d]), written[d].lexical)
                          for d in digests if by_text[d] and d in written])
    kept = [d for d in digests if by_text[d] and d not in written]
    # a group can be missing while its products are not (an index written before the groups, being repaired):
    # it has no vectors to take here, and the text's next upsert or the repair creates it
    existing = {hit.id for hit in index.retrieve(groups, [group_id(d) for d in kept], with_vectors=False,
                                                 with_payload=False)}
    for digest in kept:
        if group_id(digest) in existing:
            index.set_payload(groups, group_id(digest), {MEMBERS: members_of(by_text[digest])})


def upsert_products(index: VectorIndex, products: str, groups: str, points: Sequence[IndexPoint],
                    replaced: Iterable[str] = ()) -> None:
    """Upsert product ``points`` (payloads of cartwise.catalog.product_payload) into ``products`` and rewrite
    the groups of their texts and of the digests ``replaced`` (texts some of them had before). Raises
    KeyError for a missing collection."""
    index.upsert(products, points)
    written = {point.payload[TEXT_DIGEST]: point for point in points}
    regroup(index, products, groups, [*written, *replaced], written)


def delete_products(index: VectorIndex, products: str, groups: str, ids: Sequence[str]) -> None:
    """Delete the product points ``ids`` from ``products`` and rewrite the groups of their texts. Raises
    KeyError for a missing collection."""
    stored = index.retrieve(products, ids, with_vectors=False)
    index.delete(products, ids)
    regroup(index, products, groups, [hit.payload[TEXT_DIGEST] for hit in stored if TEXT_DIGEST in hit.payload], {})


def products_of(group: IndexHit, flt: SearchFilter, every: bool) -> list[IndexHit]:
    """The products a group hit shows on a page: its first member (in point-id order) that matches ``flt``'s
    product conditions, or with ``every`` all that do; each as a hit of the product (its point id; the group's
    score, vector and BM25; the group's shared payload with the member's fields)."""
    shared = {key: value for key, value in group.payload.items() if key != MEMBERS}
    shown = []
    for member in group.payload.get(MEMBERS, ()):
        if member_matches(member, flt):
            fields = {key: value for key, value in member.items() if key != MEMBER_ID}
            shown.append(IndexHit(member[MEMBER_ID], group.score, {**shared, **fields}, group.vector,
                                  group.lexical_score))
            if not every:
                break
    return shown


def member_matches(member: Mapping, flt: SearchFilter) -> bool:
    """Whether a group ``member`` satisfies ``flt``'s conditions on a product's own fields (price, stock,
    ids), as the engine's nested condition does (a price bound excludes a product without a price)."""
    price = member.get("price")
    if (flt.price_min is not None or flt.price_max is not None) and price is None:
        return False
    if flt.price_min is not None and price < flt.price_min or flt.price_max is not None and price > flt.price_max:
        return False
    if flt.in_stock is not None and member.get("stock") != stock_keyword(flt.in_stock):
        return False
    return (not flt.ids or member[MEMBER_ID] in flt.ids) and member[MEMBER_ID] not in flt.exclude_ids
