"""Qdrant server backend through qdrant-client (gRPC in production).

Tests drive this same code through qdrant-client's local mode (``QdrantClient(":memory:")``),
which speaks the same client API; local mode is brute force and never the embedded default."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from qdrant_client import QdrantClient, models

from cartwise.index.base import (
    CATEGORY_SEPARATOR,
    CollectionSchema,
    IndexHit,
    IndexPoint,
    SearchFilter,
    as_vector,
    stock_keyword,
)

_SCHEMA_TYPES = (("keyword", models.PayloadSchemaType.KEYWORD), ("float", models.PayloadSchemaType.FLOAT))


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

    def _require(self, name: str) -> None:
        if not self._client.collection_exists(name):
            raise KeyError(f"collection {name!r} does not exist")

    def create_collection(self, name: str, dim: int, schema: CollectionSchema) -> None:
        if self._client.collection_exists(name):
            return
        self._client.create_collection(
            name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT))
        for attr, schema_type in _SCHEMA_TYPES:
            for field_name in getattr(schema, attr):
                self._client.create_payload_index(name, field_name, field_schema=schema_type)

    def has_collection(self, name: str) -> bool:
        return self._client.collection_exists(name)

    def drop_collection(self, name: str) -> None:
        if self._client.collection_exists(name):
            self._client.delete_collection(name)

    def collections(self) -> list[str]:
        return sorted(c.name for c in self._client.get_collections().collections)

    def upsert(self, name: str, points: Sequence[IndexPoint]) -> None:
        self._require(name)
        if points:
            self._client.upsert(name, points=[
                models.PointStruct(id=p.id, vector=np.asarray(p.vector, dtype=np.float32).tolist(), payload=p.payload)
                for p in points])

    def delete(self, name: str, ids: Sequence[str]) -> None:
        self._require(name)
        if ids:
            self._client.delete(name, points_selector=models.PointIdsList(points=list(ids)))

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = True) -> list[IndexHit]:
        self._require(name)
        if not ids:
            return []
        records = self._client.retrieve(name, ids=list(ids), with_payload=True, with_vectors=with_vectors)
        return [IndexHit(str(r.id), 0.0, r.payload or {}, as_vector(r.vector) if with_vectors else None)
                for r in records]

    def search(self, name: str, vector: np.ndarray, limit: int, flt: SearchFilter | None = None,
               with_vectors: bool = False, exact: bool = False, hnsw_ef: int | None = None) -> list[IndexHit]:
        self._require(name)
        response = self._client.query_points(
            name, query=np.asarray(vector, dtype=np.float32).tolist(), limit=limit, query_filter=server_filter(flt),
            with_payload=True, with_vectors=with_vectors, search_params=models.SearchParams(exact=exact, hnsw_ef=hnsw_ef))
        return [IndexHit(str(p.id), float(p.score), p.payload or {}, as_vector(p.vector) if with_vectors else None)
                for p in response.points]

    def count(self, name: str) -> int:
        self._require(name)
        return self._client.count(name, exact=True).count

    def close(self) -> None:
        self._client.close()

