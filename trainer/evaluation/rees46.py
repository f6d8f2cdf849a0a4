"""Personalized retrieval on REES46: replay events in time order through the serving personalization
code and, at every cart or purchase by a user with earlier events, search for the target product's leaf
category (e.g. "smartphone") with and without the user's vector as it stood just before the event,
ranked as the API serves (``cartwise.retrieval.rank``: hybrid by default, or dense).

What the protocol rewards: almost every REES46 cart or purchase follows a view of the same product by
the same user, so the personalized ranking gains mostly by re-finding what the user just looked at.
No cart or purchase target here is new to its user, so the ``novel_*`` figures take a wider target set:
every event of a user with earlier events on a product with a category the user never interacted with
before (mostly views), searched the same way: whether the history helps find something new.
REES46 has no titles: products that share brand and leaf category share one text, hence one vector, and
the exact target ties with its twins (tie order is the index's). The candidate set is the whole
2 h 50 min catalog, including products first seen after the event."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from cartwise.catalog import TEXT_DIGEST, event_lexical_text, event_product_text, point_id, text_digest
from cartwise.datasets import Record, rees46_records
from cartwise.events import ProductUpsert
from cartwise.groups import upsert_products
from cartwise.index import GROUPS_SCHEMA, PRODUCTS_SCHEMA, EdgeIndex, IndexPoint
from cartwise.lexical import LexicalEncoder
from cartwise.personalization import UserHistory, UserVector, accumulate, personalization_weight
from cartwise.ranking import RankingProfile
from cartwise.registry import ModelRegistry
from cartwise.retrieval import RankRequest, Retrieval, rank
from cartwise.settings import Lexical, Personalization
from encoders.runtime import query_encoder
from trainer.evaluation.homedepot import EVAL, bm25_index, bm25_top_k, cached_catalog_vectors
from trainer.evaluation.metrics import MetricMeans, hit_at, reciprocal_rank_at

K = 10


def _catalog(records: list[Record]) -> dict[str, ProductUpsert]:
    """The latest catalog upsert per product."""
    return {r.key: r.event for r in records if r.topic_field == "catalog"}


def target_query(event, catalog: dict[str, ProductUpsert], seen: set[str]) -> tuple[str | None, bool]:
    """(the protocol's query for ``event``: its product's leaf category, or None when it is no target;
    whether it is a novel target). ``seen`` holds the products the user interacted with before. A target
    needs a user with earlier events and a product with a category; a cart or purchase is a target, any
    event on a product not in ``seen`` a novel one."""
    target = catalog[event.product_id]
    if not (seen and target.category_path):
        return None, False
    novel = event.product_id not in seen
    if event.event_type in ("cart", "purchase") or novel:
        return target.category_path[-1].replace("_", " "), novel
    return None, False


def _targets(kind: str, novel: bool) -> tuple[bool, ...]:
    """(counts among all targets, counts among novel targets) for an event of ``kind``."""
    return kind in ("cart", "purchase"), novel


def evaluate_rees46_bm25(events: Path | None = None) -> dict:
    """The same targets ranked by BM25 (bm25s) over the same product text; no personalization."""
    records = list(rees46_records(events))
    catalog = _catalog(records)
    ids = list(catalog)
    retriever = bm25_index([event_product_text(catalog[p]) for p in ids])
    means, seen = (MetricMeans(), MetricMeans()), {}
    for record in records:
        if record.topic_field == "catalog":
            continue
        event = record.event
        before = seen.setdefault(event.user_id, set())
        query, novel = target_query(event, catalog, before)
        if query is not None:
            ranked = [ids[d] for d in bm25_top_k(retriever, [query], K)[0]]
            for m, counts in zip(means, _targets(event.event_type, novel)):
                if counts:
                    m.add("hit@10", hit_at(ranked, event.product_id, K))
                    m.add("mrr@10", reciprocal_rank_at(ranked, event.product_id, K))
        before.add(event.product_id)
    return {**_figures(means[0], ""), **_figures(means[1], "novel_")}


def _figures(means: MetricMeans, prefix: str) -> dict:
    return {f"{prefix}hit@10": means.mean("hit@10"), f"{prefix}mrr@10": means.mean("mrr@10"),
            f"{prefix}targets": means.counts.get("hit@10", 0)}


def evaluate_rees46(registry: ModelRegistry, version: str, params: Personalization, cache_dir: Path,
                    events: Path | None = None, retrieval: Retrieval = "hybrid",
                    lexical: Lexical | None = None) -> dict:
    """HitRate@10 and MRR@10 of the exact target product, non-personalized vs personalized, over all
    targets and over novel ones, and the numbers of targets (see module doc for the protocol)."""
    return evaluate_rees46_grid(registry, version, [params], cache_dir, events, retrieval=retrieval,
                                lexical=lexical)[0]


def evaluate_rees46_grid(registry: ModelRegistry, version: str, grid: list[Personalization], cache_dir: Path,
                         events: Path | None = None, users: Callable[[str], bool] = lambda user: True,
                         retrieval: Retrieval = "hybrid", lexical: Lexical | None = None) -> list[dict]:
    """:func:`evaluate_rees46` for every parameter set of ``grid`` in one replay (user vectors kept per
    half-life and weights), on the targets of users ``users`` accepts. Raises ValueError when the grid
    mixes history lengths."""
    if len({p.max_history for p in grid}) != 1:
        raise ValueError("one max_history per grid: it changes the replayed histories")
    records = list(rees46_records(events))
    catalog = _catalog(records)
    ids = list(catalog)
    vectors = cached_catalog_vectors(registry, version, [event_product_text(catalog[p]) for p in ids], cache_dir)
    vector_of = dict(zip(ids, vectors))
    encoder = query_encoder(registry, version)
    lexical = lexical or Lexical()
    bm25, profile = LexicalEncoder(lexical), RankingProfile.from_settings(lexical)
    queries: dict[str, tuple] = {}
    histories: dict[str, UserHistory] = {}
    seen: dict[str, set[str]] = {}  # every product each user interacted with (the history keeps the latest)
    kinds = {_state_key(p): p for p in grid}  # one user-vector state per key, accumulated with its params
    states: dict[tuple, dict[str, UserVector]] = {kind: {} for kind in kinds}
    plain, personalized = (MetricMeans(), MetricMeans()), [(MetricMeans(), MetricMeans()) for _ in grid]
    with tempfile.TemporaryDirectory(prefix="cartwise-eval-") as tmp:
        index = EdgeIndex(Path(tmp))
        index.create_collection(EVAL.products, vectors.shape[1], PRODUCTS_SCHEMA)
        index.create_collection(EVAL.groups, vectors.shape[1], GROUPS_SCHEMA)
        upsert_products(index, EVAL.products, EVAL.groups, [
            IndexPoint(point_id(p), vector_of[p], {"product_id": p, TEXT_DIGEST: text_digest(event_product_text(catalog[p]))},
                       bm25.document(event_lexical_text(catalog[p]))) for p in ids])
        index.optimize(EVAL.groups)

        def score(means: tuple[MetricMeans, MetricMeans], request: RankRequest, event, novel: bool) -> None:
            # every product, as keep_duplicates serves it: a target is one product among its identical-text
            # copies (REES46 titles are brand + category), and collapsing would keep an arbitrary one of them
            ranked = [h.hit.payload["product_id"] for h in rank(index, EVAL.groups, request, profile, K, collapse=False)]
            for m, counts in zip(means, _targets(event.event_type, novel)):
                if counts:
                    m.add("hit@10", hit_at(ranked, event.product_id, K))
                    m.add("mrr@10", reciprocal_rank_at(ranked, event.product_id, K))

        for record in records:
            if record.topic_field == "catalog":
                continue
            event = record.event
            history = histories.setdefault(event.user_id, UserHistory())
            before = seen.setdefault(event.user_id, set())
            query, novel = target_query(event, catalog, before)
            if query is not None and users(event.user_id):
                if query not in queries:
                    queries[query] = (encoder.encode([query])[0], bm25.query(query))
                qvec, lexical_query = queries[query]
                score(plain, RankRequest(qvec, lexical_query, None, 0.0, retrieval), event, novel)
                for params, means in zip(grid, personalized):
                    state = states[_state_key(params)].get(event.user_id)
                    alpha = personalization_weight(state.n, params) if state else 0.0
                    request = RankRequest(qvec, lexical_query, state.vector if state else None, alpha, retrieval)
                    score(means, request, event, novel)
            before.add(event.product_id)
            if history.apply(event, grid[0].max_history):
                kept = history.find(event.event_id)
                if kept is not None:
                    for kind, params in kinds.items():
                        states[kind][event.user_id] = accumulate(states[kind].get(event.user_id),
                                                                 [(kept, vector_of[event.product_id])], 0, params)
        index.close()
    base = {**_figures(plain[0], ""), **_figures(plain[1], "novel_"), "retrieval": retrieval}
    return [{**base, **{k: v for k, v in {**_figures(all_, "personalized_"),
                                          **_figures(novel, "novel_personalized_")}.items() if "targets" not in k}}
            for all_, novel in personalized]


def _state_key(params: Personalization) -> tuple:
    """The parameters a user vector depends on (α_max and n₀ only weigh it at query time)."""
    return (params.half_life_s, params.weight_purchase, params.weight_cart, params.weight_view)
