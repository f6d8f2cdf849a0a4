"""Qdrant Edge backend: the real Qdrant engine in-process, one on-disk shard per collection.

An Edge shard has exactly one owner process; the embedded service runs the stream worker and
the gRPC API in one process for that reason."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import qdrant_edge as qe

from cartwise.index.base import (
    CATEGORY_SEPARATOR,
    DENSE,
    LEXICAL,
    CollectionSchema,
    HybridQuery,
    IndexHit,
    IndexPoint,
    SearchFilter,
    SparseVector,
    as_vector,
    hybrid_hits,
    stock_keyword,
    to_hit,
)

_SCHEMA_TYPES = (("keyword", qe.PayloadSchemaType.Keyword), ("float", qe.PayloadSchemaType.Float))
_E = qe.Expression


def _vectors(point: IndexPoint) -> dict:
    vectors = {DENSE: np.asarray(point.vector, dtype=np.float32).tolist()}
    if point.lexical:
        vectors[LEXICAL] = qe.SparseVector(list(point.lexical.indices), list(point.lexical.values))
    return vectors


def hybrid_request(query: HybridQuery, limit: int, flt: qe.Filter | None, hnsw_ef: int | None) -> qe.QueryRequest:
    """The engine query of a :class:`HybridQuery`: the lexical and the dense top ``candidates`` (both
    filtered), their union rescored by each side, and the fused score as a formula over the two."""
    lexical = qe.Query.Nearest(qe.SparseVector(list(query.lexical.indices), list(query.lexical.values)),
                               using=LEXICAL)
    dense = qe.Query.Nearest(np.asarray(query.dense, dtype=np.float32).tolist(), using=DENSE)
    depth = max(query.candidates, limit)
    sides = [qe.Prefetch(limit=depth, query=lexical, filter=flt),
             qe.Prefetch(limit=depth, query=dense, filter=flt,
                         params=qe.SearchParams(hnsw_ef=max(hnsw_ef or 0, depth)))]
    union = qe.Prefetch(limit=2 * depth, prefetches=sides, query=qe.Fusion.Rrf(k=60))
    rescored = [qe.Prefetch(limit=2 * depth, prefetches=[union], query=lexical),
                qe.Prefetch(limit=2 * depth, prefetches=[union], query=dense)]
    w, scale = query.lexical_weight, query.lexical_scale
    formula = _E.Sum([_E.Mult([_E.Constant(w * scale), _E.Variable("$score[0]")]),
                      _E.Mult([_E.Constant(1.0 - w), _E.Variable("$score[1]")])])
    return qe.QueryRequest(limit=limit, prefetches=rescored,
                           query=qe.Formula(formula, defaults={"$score[0]": 0.0, "$score[1]": 0.0}),
                           with_payload=True, with_vector=[DENSE])


def edge_filter(flt: SearchFilter | None) -> qe.Filter | None:
    """Translate a :class:`SearchFilter` to a Qdrant Edge filter (None when it restricts nothing)."""
    if flt is None or flt.is_empty():
        return None
    must: list = []
    if flt.category_prefix:
        must.append(qe.FieldCondition("category_prefixes",
                                      match=qe.MatchValue(CATEGORY_SEPARATOR.join(flt.category_prefix))))
    if flt.brands:
        must.append(qe.FieldCondition("brand", match=qe.MatchAny([b.lower() for b in flt.brands])))
    if flt.price_min is not None or flt.price_max is not None:
        must.append(qe.FieldCondition("price", range=qe.RangeFloat(gte=flt.price_min, lte=flt.price_max)))
    if flt.in_stock is not None:
        must.append(qe.FieldCondition("stock", match=qe.MatchValue(stock_keyword(flt.in_stock))))
    must_not = [qe.HasIdCondition(set(flt.exclude_ids))] if flt.exclude_ids else None
    return qe.Filter(must=must or None, must_not=must_not)


class EdgeIndex:
    """:class:`cartwise.index.VectorIndex` over Qdrant Edge shards under ``root/<collection>``.

    ``search_threads`` sizes each shard's search pool (None: one per CPU). A request here is one small
    query, so on a small machine one thread avoids handing every query to a pool thread."""

    def __init__(self, root: Path, search_threads: int | None = None) -> None:
        self._root = Path(root)
        self._search_threads = search_threads
        self._root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._lock = threading.Lock()  # guards the shard map, not the shards
        for path in sorted(p for p in self._root.iterdir() if p.is_dir()):
            self._shards[path.name] = _load(path)

    def _shard(self, name: str) -> qe.EdgeShard:
        try:
            return self._shards[name]
        except KeyError:
            raise KeyError(f"collection {name!r} does not exist") from None

    def create_collection(self, name: str, dim: int, schema: CollectionSchema) -> None:
        with self._lock:
            if name in self._shards:
                return
            sparse = {LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if schema.lexical else None
            config = qe.EdgeConfig(vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Dot)},
                                   sparse_vectors=sparse, max_search_threads=self._search_threads)
            shard = qe.EdgeShard.create(str(self._root / name), config)
            for attr, schema_type in _SCHEMA_TYPES:
                for field_name in getattr(schema, attr):
                    shard.update(qe.UpdateOperation.create_field_index(field_name, schema_type))
            self._shards[name] = shard

    def has_collection(self, name: str) -> bool:
        return name in self._shards

    def drop_collection(self, name: str) -> None:
        with self._lock:
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self._root / name, ignore_errors=True)

    def collections(self) -> list[str]:
        return sorted(self._shards)

    def upsert(self, name: str, points: Sequence[IndexPoint]) -> None:
        shard = self._shard(name)
        if not points:
            return
        shard.update(qe.UpdateOperation.upsert_points([qe.Point(p.id, _vectors(p), p.payload) for p in points]))

    def delete(self, name: str, ids: Sequence[str]) -> None:
        if ids:
            self._shard(name).update(qe.UpdateOperation.delete_points(list(ids)))

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = True,
                 with_payload: bool = True) -> list[IndexHit]:
        if not ids:
            return []
        records = self._shard(name).retrieve(list(ids), with_payload=with_payload,
                                             with_vector=[DENSE] if with_vectors else False)
        return [IndexHit(str(r.id), 0.0, r.payload or {}, as_vector(r.vector) if with_vectors else None)
                for r in records]

    def search(self, name: str, vector: np.ndarray, limit: int, flt: SearchFilter | None = None,
               with_vectors: bool = False, exact: bool = False, hnsw_ef: int | None = None) -> list[IndexHit]:
        request = qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=DENSE),
            filter=edge_filter(flt), with_payload=True, with_vector=[DENSE] if with_vectors else False,
            params=qe.SearchParams(exact=exact, hnsw_ef=hnsw_ef))
        return [to_hit(p, with_vectors) for p in self._shard(name).query(request)]

    def lexical_search(self, name: str, query: SparseVector, limit: int, flt: SearchFilter | None = None,
                       with_vectors: bool = False) -> list[IndexHit]:
        request = qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(qe.SparseVector(list(query.indices), list(query.values)),
                                                using=LEXICAL),
            filter=edge_filter(flt), with_payload=True, with_vector=[DENSE] if with_vectors else False)
        return [to_hit(p, with_vectors, float(p.score)) for p in self._lexical_query(name, request)]

    def hybrid_search(self, name: str, query: HybridQuery, limit: int, flt: SearchFilter | None = None,
                      hnsw_ef: int | None = None) -> list[IndexHit]:
        return hybrid_hits(self._lexical_query(name, hybrid_request(query, limit, edge_filter(flt), hnsw_ef)), query)

    def _lexical_query(self, name: str, request: qe.QueryRequest) -> list:
        shard = self._shard(name)
        try:
            return shard.query(request)
        except Exception as err:  # the binding raises bare Exceptions; only this one is the caller's fault
            if f"Not existing vector name error: {LEXICAL}" in str(err):
                raise ValueError(f"collection {name!r} has no lexical vectors") from None
            raise

    def optimize(self, name: str) -> None:
        """Build the HNSW graph and merge segments of ``name`` now (blocking; seconds for 50k points).
        Until then Edge searches new points by brute force."""
        self._shard(name).optimize()

    def count(self, name: str) -> int:
        return self._shard(name).count(qe.CountRequest(exact=True))

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()


class IndexInUse(RuntimeError):
    """Another process owns a shard under this directory (an Edge shard has one owner)."""


def _load(path: Path) -> qe.EdgeShard:
    try:
        return qe.EdgeShard.load(str(path))  # keeps its persisted config
    except Exception as err:
        if "WouldBlock" in str(err):
            raise IndexInUse(f"{path} is open in another process; stop it or use another CARTWISE_DATA_DIR") from None
        raise

