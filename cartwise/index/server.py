"""Qdrant server backend through qdrant-client (gRPC in production): :class:`QdrantServerIndex` over a
``QdrantClient`` (the stream worker, trainer and tools) and :class:`AsyncQdrantServerIndex` over an
``AsyncQdrantClient`` (the serving path, so no request blocks the event loop).

Both build every request with the same functions (:class:`ClientCall`) and map the engine's errors in one
place (:func:`engine_errors`): a missing collection to KeyError from the engine's own answer, not a check
per call, and a server that does not answer to :class:`IndexUnavailable`.
Tests drive this same code through qdrant-client's local mode (``QdrantClient(":memory:")``,
``AsyncQdrantClient(":memory:")``), which speaks the same client API; local mode is brute force and never
the embedded default."""

from __future__ import annotations

import ssl
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import grpc
import numpy as np
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from cartwise.index.base import (
    CATEGORY_SEPARATOR,
    DENSE,
    LEXICAL,
    MEMBERS,
    TEXT_DIGEST,
    CollectionSchema,
    HybridQuery,
    IndexHit,
    IndexPoint,
    IndexUnavailable,
    SearchFilter,
    SparseVector,
    as_vector,
    facet_counts,
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
    depth = query.depth(limit)
    sides = [models.Prefetch(query=lexical, using=LEXICAL, limit=depth, filter=flt),
             models.Prefetch(query=dense, using=DENSE, limit=depth, filter=flt,
                             params=models.SearchParams(hnsw_ef=max(hnsw_ef or 0, depth)))]
    union = models.Prefetch(prefetch=sides, query=models.FusionQuery(fusion=models.Fusion.RRF), limit=2 * depth)
    rescored = [models.Prefetch(prefetch=[union], query=lexical, using=LEXICAL, limit=2 * depth),
                models.Prefetch(prefetch=[union], query=dense, using=DENSE, limit=2 * depth)]
    lexical_factor, dense_factor = query.coefficients()
    formula = models.FormulaQuery(formula=models.SumExpression(sum=[
        models.MultExpression(mult=[lexical_factor, "$score[0]"]),
        models.MultExpression(mult=[dense_factor, "$score[1]"])]),
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
    """Translate a :class:`SearchFilter` to a qdrant-client filter (None when it restricts nothing); a
    ``grouped`` one matches a product's own fields by a nested condition on the group's members."""
    if flt is None or flt.is_empty():
        return None
    must: list = []
    if flt.category_prefix:
        must.append(models.FieldCondition(
            key="category_prefixes", match=models.MatchValue(value=CATEGORY_SEPARATOR.join(flt.category_prefix))))
    if flt.brands:
        must.append(models.FieldCondition(key="brand", match=models.MatchAny(any=[b.lower() for b in flt.brands])))
    if flt.texts:
        must.append(models.FieldCondition(key=TEXT_DIGEST, match=models.MatchAny(any=sorted(flt.texts))))
    must_not = [models.FieldCondition(key=TEXT_DIGEST, match=models.MatchAny(any=sorted(flt.exclude_texts)))] \
        if flt.exclude_texts else []
    if flt.grouped:
        if flt.restricts_products():
            must.append(models.NestedCondition(nested=models.Nested(
                key=MEMBERS, filter=models.Filter(**_product_conditions(flt, "id")))))
    else:
        product = _product_conditions(flt, None)
        must += product["must"] or []
        must_not += product["must_not"] or []
    return models.Filter(must=must or None, must_not=must_not or None)


def _product_conditions(flt: SearchFilter, id_key: str | None) -> dict:
    """The ``must`` and ``must_not`` conditions on a product's own fields; ids matched as point ids, or as the
    keyword ``id_key`` (a group member's)."""
    must: list = []
    if flt.price_min is not None or flt.price_max is not None:
        must.append(models.FieldCondition(key="price", range=models.Range(gte=flt.price_min, lte=flt.price_max)))
    if flt.in_stock is not None:
        must.append(models.FieldCondition(key="stock", match=models.MatchValue(value=stock_keyword(flt.in_stock))))
    ids = lambda values: models.HasIdCondition(has_id=sorted(values)) if id_key is None else \
        models.FieldCondition(key=id_key, match=models.MatchAny(any=sorted(values)))
    if flt.ids:
        must.append(ids(flt.ids))
    return {"must": must or None, "must_not": [ids(flt.exclude_ids)] if flt.exclude_ids else None}


@contextmanager
def engine_errors(name: str) -> Iterator[None]:
    """Raise KeyError for the engine's answer that collection ``name`` does not exist: HTTP 404 over REST,
    NOT_FOUND over gRPC (sync and grpc.aio), and local mode's ValueError("Collection <name> not found")
    (qdrant_client/local/qdrant_local.py ``_get_collection``); :class:`IndexUnavailable` for a server that
    does not answer (gRPC UNAVAILABLE; a REST transport error, qdrant-client's ResponseHandlingException).
    Every other error passes unchanged."""
    try:
        yield
    except UnexpectedResponse as err:
        if err.status_code == 404:
            raise KeyError(f"collection {name!r} does not exist") from None
        raise
    except ResponseHandlingException as err:
        raise IndexUnavailable(f"Qdrant server unavailable: {err.source}") from err
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            raise KeyError(f"collection {name!r} does not exist") from None
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            raise IndexUnavailable(f"Qdrant server unavailable: {err.details()}") from err
        raise
    except ValueError as err:
        if str(err) == f"Collection {name} not found":
            raise KeyError(f"collection {name!r} does not exist") from None
        raise


def _ignored(response: Any) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ClientCall:
    """One qdrant-client request on a collection: the client ``method`` (called as
    ``method(collection, **kwargs)``, the same on ``QdrantClient`` and ``AsyncQdrantClient``) and ``result``,
    which turns its response into ours. ``method`` None: nothing to ask (an empty request); the result is
    ``result(None)`` without a round trip."""

    method: str | None
    kwargs: dict
    result: Callable[[Any], Any] = _ignored


NOTHING = ClientCall(None, {})  # an empty write
NO_HITS = ClientCall(None, {}, lambda _: [])  # an empty read


def _dense_vectors(with_vectors: bool) -> list[str] | bool:
    return [DENSE] if with_vectors else False


def _records(with_vectors: bool) -> Callable[[list], list[IndexHit]]:
    return lambda records: [IndexHit(str(r.id), 0.0, r.payload or {}, as_vector(r.vector) if with_vectors else None)
                            for r in records]


def create_calls(dim: int, schema: CollectionSchema) -> list[ClientCall]:
    """The collection (``dim``-d DENSE, Dot; LEXICAL sparse with the engine's IDF when ``schema.lexical``)
    and then its payload indexes."""
    sparse = {LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)} if schema.lexical else None
    collection = ClientCall("create_collection", {
        "vectors_config": {DENSE: models.VectorParams(size=dim, distance=models.Distance.DOT)},
        "sparse_vectors_config": sparse})
    return [collection, *(ClientCall("create_payload_index", {"field_name": field_name, "field_schema": schema_type})
                          for attr, schema_type in _SCHEMA_TYPES for field_name in getattr(schema, attr))]


def upsert_call(points: Sequence[IndexPoint]) -> ClientCall:
    """Insert or replace ``points`` by id."""
    if not points:
        return NOTHING
    return ClientCall("upsert", {"points": [models.PointStruct(id=p.id, vector=_vectors(p), payload=p.payload)
                                            for p in points]})


def delete_call(ids: Sequence[str]) -> ClientCall:
    """Delete points by id."""
    if not ids:
        return NOTHING
    return ClientCall("delete", {"points_selector": models.PointIdsList(points=list(ids))})


def set_payload_call(point: str, payload: dict) -> ClientCall:
    """Replace the keys of ``payload`` in point ``point``'s payload."""
    return ClientCall("set_payload", {"payload": payload, "points": [point]})


def retrieve_call(ids: Sequence[str], with_vectors: bool, with_payload: bool) -> ClientCall:
    """Points by id, as :meth:`cartwise.index.VectorIndex.retrieve`."""
    if not ids:
        return NO_HITS
    return ClientCall("retrieve", {"ids": list(ids), "with_payload": with_payload,
                                   "with_vectors": _dense_vectors(with_vectors)}, _records(with_vectors))


def search_call(vector: np.ndarray, limit: int, flt: SearchFilter | None, with_vectors: bool, exact: bool,
                hnsw_ef: int | None) -> ClientCall:
    """Top ``limit`` by inner product with ``vector`` (D,), as :meth:`cartwise.index.VectorIndex.search`."""
    return ClientCall("query_points", {
        "query": np.asarray(vector, dtype=np.float32).tolist(), "using": DENSE, "limit": limit,
        "query_filter": server_filter(flt), "with_payload": True, "with_vectors": _dense_vectors(with_vectors),
        "search_params": models.SearchParams(exact=exact, hnsw_ef=hnsw_ef)},
        lambda response: [to_hit(p, with_vectors) for p in response.points])


def lexical_call(query: SparseVector, limit: int, flt: SearchFilter | None, with_vectors: bool) -> ClientCall:
    """Top ``limit`` by BM25, as :meth:`cartwise.index.VectorIndex.lexical_search`."""
    if not query:
        return NO_HITS
    return ClientCall("query_points", {
        "query": _sparse(query), "using": LEXICAL, "limit": limit, "query_filter": server_filter(flt),
        "with_payload": True, "with_vectors": _dense_vectors(with_vectors)},
        lambda response: [to_hit(p, with_vectors, float(p.score)) for p in response.points])


def hybrid_call(query: HybridQuery, limit: int, flt: SearchFilter | None, hnsw_ef: int | None,
                with_vectors: bool = True) -> ClientCall:
    """Top ``limit`` by the fused score, as :meth:`cartwise.index.VectorIndex.hybrid_search`."""
    prefetch, formula = hybrid_prefetch(query, limit, server_filter(flt), hnsw_ef)
    return ClientCall("query_points", {"prefetch": prefetch, "query": formula, "limit": limit, "with_payload": True,
                                       "with_vectors": _dense_vectors(with_vectors)},
                      lambda response: hybrid_hits(response.points, query, with_vectors))


def scroll_call(limit: int, flt: SearchFilter | None, order_by: str | None, with_vectors: bool) -> ClientCall:
    """Points matching ``flt``, as :meth:`cartwise.index.VectorIndex.scroll`."""
    order = models.OrderBy(key=order_by, direction=models.Direction.DESC) if order_by else None
    return ClientCall("scroll", {"scroll_filter": server_filter(flt), "limit": limit, "order_by": order,
                                 "with_payload": True, "with_vectors": _dense_vectors(with_vectors)},
                      lambda response: _records(with_vectors)(response[0]))


def facet_call(key: str, limit: int, flt: SearchFilter | None, exact: bool) -> ClientCall:
    """Facet counts of ``key``, as :meth:`cartwise.index.VectorIndex.facet`."""
    return ClientCall("facet", {"key": key, "limit": limit, "exact": exact, "facet_filter": server_filter(flt)},
                      lambda response: facet_counts(response.hits))


COUNT = ClientCall("count", {"exact": True}, lambda response: response.count)
HAS_LEXICAL = ClientCall("get_collection", {},
                         lambda info: LEXICAL in (info.config.params.sparse_vectors or {}))  # has lexical vectors


def require_lexical(name: str, has_lexical: bool) -> None:
    """Raise ValueError when collection ``name`` has no lexical vectors."""
    if not has_lexical:
        raise ValueError(f"collection {name!r} has no lexical vectors")


class QdrantServerIndex:
    """:class:`cartwise.index.VectorIndex` over a Qdrant server (one Qdrant collection per collection).
    Blocking: for the stream worker, the trainer and tools; the serving path reads through
    :class:`AsyncQdrantServerIndex`."""

    remote = True  # every call a round trip to the server

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self._lexical: dict[str, bool] = {}  # collection -> has lexical vectors (dropped with the collection)

    def _run(self, name: str, call: ClientCall) -> Any:
        if call.method is None:
            return call.result(None)
        with engine_errors(name):
            return call.result(getattr(self._client, call.method)(name, **call.kwargs))

    def create_collection(self, name: str, dim: int, schema: CollectionSchema) -> None:
        if not self._client.collection_exists(name):
            for call in create_calls(dim, schema):
                self._run(name, call)

    def has_collection(self, name: str) -> bool:
        return self._client.collection_exists(name)

    def drop_collection(self, name: str) -> None:
        self._lexical.pop(name, None)
        if self._client.collection_exists(name):
            self._client.delete_collection(name)

    def collections(self) -> list[str]:
        return sorted(c.name for c in self._client.get_collections().collections)

    def upsert(self, name: str, points: Sequence[IndexPoint]) -> None:
        self._run(name, upsert_call(points))

    def delete(self, name: str, ids: Sequence[str]) -> None:
        self._run(name, delete_call(ids))

    def set_payload(self, name: str, point: str, payload: dict) -> None:
        self._run(name, set_payload_call(point, payload))

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = True,
                 with_payload: bool = True) -> list[IndexHit]:
        return self._run(name, retrieve_call(ids, with_vectors, with_payload))

    def search(self, name: str, vector: np.ndarray, limit: int, flt: SearchFilter | None = None,
               with_vectors: bool = False, exact: bool = False, hnsw_ef: int | None = None) -> list[IndexHit]:
        return self._run(name, search_call(vector, limit, flt, with_vectors, exact, hnsw_ef))

    def lexical_search(self, name: str, query: SparseVector, limit: int, flt: SearchFilter | None = None,
                       with_vectors: bool = False) -> list[IndexHit]:
        self._require_lexical(name)
        return self._run(name, lexical_call(query, limit, flt, with_vectors))

    def hybrid_search(self, name: str, query: HybridQuery, limit: int, flt: SearchFilter | None = None,
                      hnsw_ef: int | None = None, with_vectors: bool = True) -> list[IndexHit]:
        self._require_lexical(name)
        return self._run(name, hybrid_call(query, limit, flt, hnsw_ef, with_vectors))

    def _require_lexical(self, name: str) -> None:
        if name not in self._lexical:  # a collection's vectors never change: ask the server once per name
            self._lexical[name] = self._run(name, HAS_LEXICAL)
        require_lexical(name, self._lexical[name])

    def scroll(self, name: str, limit: int, flt: SearchFilter | None = None, order_by: str | None = None,
               with_vectors: bool = False) -> list[IndexHit]:
        return self._run(name, scroll_call(limit, flt, order_by, with_vectors))

    def facet(self, name: str, key: str, limit: int, flt: SearchFilter | None = None,
              exact: bool = True) -> list[tuple[str, int]]:
        return self._run(name, facet_call(key, limit, flt, exact))

    def count(self, name: str) -> int:
        return self._run(name, COUNT)

    def close(self) -> None:
        self._client.close()


class AsyncQdrantServerIndex:
    """:class:`cartwise.index.AsyncVectorIndex` over a Qdrant server through ``AsyncQdrantClient``: the
    same requests as :class:`QdrantServerIndex`, awaited. ``create_collection`` makes a collection (tests;
    the stream worker writes through :class:`QdrantServerIndex`, tests load points with :func:`upsert_call`)."""

    def __init__(self, client: AsyncQdrantClient) -> None:
        self._client = client
        self._lexical: dict[str, bool] = {}  # collection -> has lexical vectors (a collection's never change)

    async def _run(self, name: str, call: ClientCall) -> Any:
        if call.method is None:
            return call.result(None)
        with engine_errors(name):
            return call.result(await getattr(self._client, call.method)(name, **call.kwargs))

    async def create_collection(self, name: str, dim: int, schema: CollectionSchema) -> None:
        """As :meth:`cartwise.index.VectorIndex.create_collection`."""
        if not await self._client.collection_exists(name):
            for call in create_calls(dim, schema):
                await self._run(name, call)

    async def has_collection(self, name: str) -> bool:
        return await self._client.collection_exists(name)

    async def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = True,
                       with_payload: bool = True) -> list[IndexHit]:
        return await self._run(name, retrieve_call(ids, with_vectors, with_payload))

    async def search(self, name: str, vector: np.ndarray, limit: int, flt: SearchFilter | None = None,
                     with_vectors: bool = False, exact: bool = False, hnsw_ef: int | None = None) -> list[IndexHit]:
        return await self._run(name, search_call(vector, limit, flt, with_vectors, exact, hnsw_ef))

    async def lexical_search(self, name: str, query: SparseVector, limit: int, flt: SearchFilter | None = None,
                             with_vectors: bool = False) -> list[IndexHit]:
        await self._require_lexical(name)
        return await self._run(name, lexical_call(query, limit, flt, with_vectors))

    async def hybrid_search(self, name: str, query: HybridQuery, limit: int, flt: SearchFilter | None = None,
                            hnsw_ef: int | None = None, with_vectors: bool = True) -> list[IndexHit]:
        await self._require_lexical(name)
        return await self._run(name, hybrid_call(query, limit, flt, hnsw_ef, with_vectors))

    async def _require_lexical(self, name: str) -> None:
        if name not in self._lexical:
            self._lexical[name] = await self._run(name, HAS_LEXICAL)
        require_lexical(name, self._lexical[name])

    async def scroll(self, name: str, limit: int, flt: SearchFilter | None = None, order_by: str | None = None,
                     with_vectors: bool = False) -> list[IndexHit]:
        return await self._run(name, scroll_call(limit, flt, order_by, with_vectors))

    async def facet(self, name: str, key: str, limit: int, flt: SearchFilter | None = None,
                    exact: bool = True) -> list[tuple[str, int]]:
        return await self._run(name, facet_call(key, limit, flt, exact))

    async def count(self, name: str) -> int:
        return await self._run(name, COUNT)

    async def close(self) -> None:
        await self._client.close()
