"""Personalized retrieval on REES46: replay events in time order through the streams' user-state logic
and, at every cart or purchase by a user with earlier events, search for the target product's leaf
category (e.g. "smartphone") with and without the user's vector as it stood just before the event.

What the protocol rewards: almost every REES46 cart or purchase follows a view of the same product by
the same user, so the personalized ranking gains mostly by re-finding what the user just looked at.
REES46 has no titles: products that share brand and leaf category share one text, hence one vector, and
the exact target ties with its twins (tie order is the index's). The candidate set is the whole
2 h 50 min catalog, including products first seen after the event."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from cartwise.catalog import point_id
from cartwise.datasets import Record, rees46_records
from cartwise.events import ProductUpsert
from cartwise.index import PRODUCTS_SCHEMA, EdgeIndex, IndexPoint
from cartwise.personalization import UserHistory, UserVector, accumulate, fused_query, personalization_weight
from cartwise.registry import ModelRegistry
from cartwise.settings import Personalization
from encoders.runtime import OnnxEncoder
from trainer.evaluation.homedepot import bm25_index, bm25_top_k, cached_catalog_vectors
from trainer.evaluation.metrics import MetricMeans, hit_at, reciprocal_rank_at

K = 10


def _catalog(records: list[Record]) -> dict[str, ProductUpsert]:
    """The latest catalog upsert per product."""
    return {r.key: r.event for r in records if r.topic_field == "catalog"}


def target_query(event, catalog: dict[str, ProductUpsert], has_history: bool) -> str | None:
    """The protocol's query for ``event`` (its product's leaf category), or None when it is no target:
    not a cart or purchase, the user has no earlier event, or the product has no category."""
    target = catalog[event.product_id]
    if event.event_type in ("cart", "purchase") and has_history and target.category_path:
        return target.category_path[-1].replace("_", " ")
    return None


def evaluate_rees46_bm25(events: Path | None = None) -> dict:
    """The same targets ranked by BM25 (bm25s) over the same product text; no personalization."""
    from cartwise.catalog import event_product_text

    records = list(rees46_records(events))
    catalog = _catalog(records)
    ids = list(catalog)
    retriever = bm25_index([event_product_text(catalog[p]) for p in ids])
    means, seen = MetricMeans(), set()
    for record in records:
        if record.topic_field == "catalog":
            continue
        event = record.event
        query = target_query(event, catalog, event.user_id in seen)
        seen.add(event.user_id)
        if query is not None:
            ranked = [ids[d] for d in bm25_top_k(retriever, [query], K)[0]]
            means.add("hit@10", hit_at(ranked, event.product_id, K))
            means.add("mrr@10", reciprocal_rank_at(ranked, event.product_id, K))
    return {"hit@10": means.mean("hit@10"), "mrr@10": means.mean("mrr@10"), "targets": means.counts.get("hit@10", 0)}


def evaluate_rees46(registry: ModelRegistry, version: str, params: Personalization, cache_dir: Path,
                    events: Path | None = None) -> dict:
    """HitRate@10 and MRR@10 of the exact target product, non-personalized vs personalized, and the
    number of targets (see module doc for the protocol)."""
    return evaluate_rees46_grid(registry, version, [params], cache_dir, events)[0]


def evaluate_rees46_grid(registry: ModelRegistry, version: str, grid: list[Personalization], cache_dir: Path,
                         events: Path | None = None, users: Callable[[str], bool] = lambda user: True) -> list[dict]:
    """:func:`evaluate_rees46` for every parameter set of ``grid`` in one replay (user vectors kept per
    half-life and weights), on the targets of users ``users`` accepts. Raises ValueError when the grid
    mixes history lengths."""
    from cartwise.catalog import event_product_text

    if len({p.max_history for p in grid}) != 1:
        raise ValueError("one max_history per grid: it changes the replayed histories")
    records = list(rees46_records(events))
    catalog = _catalog(records)
    ids = list(catalog)
    vectors = cached_catalog_vectors(registry, version, [event_product_text(catalog[p]) for p in ids], cache_dir)
    vector_of = dict(zip(ids, vectors))
    encoder = OnnxEncoder(registry.path(version), registry.manifest(version).max_tokens)
    query_vectors: dict[str, object] = {}
    histories: dict[str, UserHistory] = {}
    kinds = {_state_key(p): p for p in grid}  # one user-vector state per key, accumulated with its params
    states: dict[tuple, dict[str, UserVector]] = {kind: {} for kind in kinds}
    plain, personalized = MetricMeans(), [MetricMeans() for _ in grid]
    with tempfile.TemporaryDirectory(prefix="cartwise-eval-") as tmp:
        index = EdgeIndex(Path(tmp))
        index.create_collection("eval", vectors.shape[1], PRODUCTS_SCHEMA)
        index.upsert("eval", [IndexPoint(point_id(p), vector_of[p], {"product_id": p}) for p in ids])
        index.optimize("eval")

        def score(means: MetricMeans, vector, target: str) -> None:
            ranked = [h.payload["product_id"] for h in index.search("eval", vector, K)]
            means.add("hit@10", hit_at(ranked, target, K))
            means.add("mrr@10", reciprocal_rank_at(ranked, target, K))

        for record in records:
            if record.topic_field == "catalog":
                continue
            event = record.event
            history = histories.setdefault(event.user_id, UserHistory())
            query = target_query(event, catalog, bool(history.interactions))
            if query is not None and users(event.user_id):
                if query not in query_vectors:
                    query_vectors[query] = encoder.encode([query])[0]
                qvec = query_vectors[query]
                score(plain, qvec, event.product_id)
                for params, means in zip(grid, personalized):
                    state = states[_state_key(params)].get(event.user_id)
                    alpha = personalization_weight(state.n, params) if state else 0.0
                    score(means, fused_query(qvec, state.vector if state else None, alpha), event.product_id)
            if history.apply(event, grid[0].max_history):
                kept = history.find(event.event_id)
                if kept is not None:
                    for kind, params in kinds.items():
                        states[kind][event.user_id] = accumulate(states[kind].get(event.user_id),
                                                                 [(kept, vector_of[event.product_id])], 0, params)
        index.close()
    base = {"hit@10": plain.mean("hit@10"), "mrr@10": plain.mean("mrr@10"), "targets": plain.counts.get("hit@10", 0)}
    return [{**base, "personalized_hit@10": m.mean("hit@10"), "personalized_mrr@10": m.mean("mrr@10")}
            for m in personalized]


def _state_key(params: Personalization) -> tuple:
    """The parameters a user vector depends on (α_max and n₀ only weigh it at query time)."""
    return (params.half_life_s, params.weight_purchase, params.weight_cart, params.weight_view)
