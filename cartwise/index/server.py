"""Qdrant server backend through qdrant-client (gRPC in production).

Tests drive this same code through qdrant-client's local mode (``QdrantClient(":memory:")``),
which speaks the same client API; local mode is brute force and never the embedded default."""

from __future__ import annotations

import ssl
from typing import Sequence

import numpy as np
from qdrant_client import QdrantClient, models

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

_SCHEMA_TYPES = (("keyword", models.PayloadSchemaType.KEYWORD), ("float", models.PayloadSchemaType.FLOAT))


def _vectors(point: IndexPoint) -> dict:
    vectors: dict = {DENSE: np.asarray(point.vector, dtype=np.float32).tolist()}
    if point.lexical:
        vectors[LEXICAL] = models.SparseVector(indices=list(point.lexical.indices), values=list(point.lexical.values))
    return vectors


def _sparse(query: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(query.indices), values=list(query.values))


def hybrid_prefetch(query: HybridQuery, limit: int, flt: models.Filter | None,
                    hnsw_ef: int | None) -> tuple[list[models.Prefetch], models.FormulaQuery]:
    """The prefetches and fusion formula of a :class:`HybridQuery` (as ``edge.hybrid_request``)."""
    lexical, dense = _sparse(query.lexical), np.asarray(query.dense, dtype=np.float32).tolist()
    depth = max(query.candidates, limit)
    sides = [models.Prefetch(query=lexical, using=LEXICAL, limit=depth, filter=flt),
             models.Prefetch(query=dense, using=DENSE, limit=depth, filter=flt,
                             params=models.SearchParams(hnsw_ef=max(hnsw_ef or 0, depth)))]
    union = models.Prefetch(prefetch=sides, query=models.FusionQuery(fusion=models.Fusion.RRF), limit=2 * depth)
    rescored = [models.Prefetch(prefetch=[union], query=lexical, using=LEXICAL, limit=2 * depth),
                models.Prefetch(prefetch=[union], query=dense, using=DENSE, limit=2 * depth)]
    w, scale = query.lexical_weight, query.lexical_scale
    formula = models.FormulaQuery(formula=models.SumExpression(sum=[
        models.MultExpression(mult=[w * scale, "$score[0]"]), models.MultExpression(mult=[1.0 - w, "$score[1]"])]),
        defaults={"$score[0]": 0.0, "$score[1]": 0.0})
    return rescored, formula


def qdrant_client_options(settings) -> dict:
    """qdrant-client keyword arguments for the server ``settings.qdrant_url`` names: gRPC transport, the
    API key (``qdrant_api_key``; qdrant-client sends it as the ``api-key`` header and warns when the URL is
    not https), and the CA to trust for TLS (``qdrant_ca_file``: gRPC root certificates and the REST
    client's ``verify``). Holds the API key: never log it. Raises OSError for an unreadable CA file."""
    options: dict = {"url": settings.qdrant_url, "prefer_grpc": True}
    if settings.qdrant_api_key is not None:
        options["api_key"] = settings.qdrant_api_key.get_secret_value()
    if settings.qdrant_ca_file is not None:
        options["grpc_options"] = {"root_certificates": settings.qdrant_ca_file.read_bytes()}
        options["verify"] = ssl.create_default_context(cafile=settings.qdrant_ca_file)
    return options


def server_filter(flt: SearchFilter | None) -> models.Filter | None:
    """Translate a :class:`SearchFilter` to a qdrant-client filter (None when it restricts nothing)."""
    if flt is None or flt.is_empty():
        return None
    must: list = []
    if flt.category_prefix:
        must.append(models.FieldCondition(
            key="category_prefixes", match=models.MatchValue(value=CATEGORY_SEPARATOR.join(flt.category_prefix))))
    if flt.brands:
        must.append(models.FieldCondition(key="brand", match=models.MatchAny(any=[b.lower() for b in flt.brands])))
    if flt.price_min is not None or flt.price_max is not None:
        must.append(models.FieldCondition(key="price", range=models.Range(gte=flt.price_min, lte=flt.price_max)))
    if flt.in_stock is not None:
        must.append(models.FieldCondition(key="stock", match=models.MatchValue(value=stock_keyword(flt.in_stock))))
    must_not = [models.HasIdCondition(has_id=sorted(flt.exclude_ids))] if flt.exclude_ids else None
    return models.Filter(must=must or None, must_not=must_not)


class QdrantServerIndex:
    """:class:`cartwise.index.VectorIndex` over a Qdrant server (one Qdrant collection per collection)."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self._lexical: dict[str, bool] = {}  # collection -> has lexical vectors (dropped with the collection)

    def _require(self, name: str) -> None:
        if not self._client.collection_exists(name):
            raise KeyError(f"collection {name!r} does not exist")

    def create_collection(self, name: str, dim: int, schema: CollectionSchema) -> None:
        if self._client.collection_exists(name):
            return
        sparse = {LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)} if schema.lexical else None
        self._client.create_collection(
            name, vectors_config={DENSE: models.VectorParams(size=dim, distance=models.Distance.DOT)},
            sparse_vectors_config=sparse)
        for attr, schema_type in _SCHEMA_TYPES:
            for field_name in getattr(schema, attr):
                self._client.create_payload_index(name, field_name, field_schema=schema_type)

    def has_collection(self, name: str) -> bool:
        return self._client.collection_exists(name)

    def drop_collection(self, name: str) -> None:
        self._lexical.pop(name, None)
        if self._client.collection_exists(name):
            self._client.delete_collection(name)

    def collections(self) -> list[str]:
        return sorted(c.name for c in self._client.get_collections().collections)

    def upsert(self, name: str, points: Sequence[IndexPoint]) -> None:
        self._require(name)
        if points:
            self._client.upsert(name, points=[models.PointStruct(id=p.id, vector=_vectors(p), payload=p.payload)
                                              for p in points])

    def delete(self, name: str, ids: Sequence[str]) -> None:
        self._require(name)
        if ids:
            self._client.delete(name, points_selector=models.PointIdsList(points=list(ids)))

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = True,
                 with_payload: bool = True) -> list[IndexHit]:
        self._require(name)
        if not ids:
            return []
        records = self._client.retrieve(name, ids=list(ids), with_payload=with_payload,
                                        with_vectors=[DENSE] if with_vectors else False)
        return [IndexHit(str(r.id), 0.0, r.payload or {}, as_vector(r.vector) if with_vectors else None)
                for r in records]

    def search(self, name: str, vector: np.ndarray, limit: int, flt: SearchFilter | None = None,
               with_vectors: bool = False, exact: bool = False, hnsw_ef: int | None = None) -> list[IndexHit]:
        self._require(name)
        response = self._client.query_points(
            name, query=np.asarray(vector, dtype=np.float32).tolist(), using=DENSE, limit=limit,
            query_filter=server_filter(flt), with_payload=True, with_vectors=[DENSE] if with_vectors else False,
            search_params=models.SearchParams(exact=exact, hnsw_ef=hnsw_ef))
        return [to_hit(p, with_vectors) for p in response.points]

    def lexical_search(self, name: str, query: SparseVector, limit: int, flt: SearchFilter | None = None,
                       with_vectors: bool = False) -> list[IndexHit]:
        self._require_lexical(name)
        if not query:
            return []
        response = self._client.query_points(
            name, query=_sparse(query), using=LEXICAL, limit=limit, query_filter=server_filter(flt),
            with_payload=True, with_vectors=[DENSE] if with_vectors else False)
        return [to_hit(p, with_vectors, float(p.score)) for p in response.points]

    def hybrid_search(self, name: str, query: HybridQuery, limit: int, flt: SearchFilter | None = None,
                      hnsw_ef: int | None = None) -> list[IndexHit]:
        self._require_lexical(name)
        prefetch, formula = hybrid_prefetch(query, limit, server_filter(flt), hnsw_ef)
        response = self._client.query_points(name, prefetch=prefetch, query=formula, limit=limit,
                                             with_payload=True, with_vectors=[DENSE])
        return hybrid_hits(response.points, query)

    def _require_lexical(self, name: str) -> None:
        self._require(name)
        if name not in self._lexical:  # a collection's vectors never change: ask the server once per name
            self._lexical[name] = LEXICAL in (self._client.get_collection(name).config.params.sparse_vectors or {})
        if not self._lexical[name]:
            raise ValueError(f"collection {name!r} has no lexical vectors")

    def count(self, name: str) -> int:
        self._require(name)
        return self._client.count(name, exact=True).count

    def close(self) -> None:
        self._client.close()

