"""Qdrant Edge backend: the real Qdrant engine in-process, one on-disk shard per collection.

An Edge shard has exactly one owner process; the embedded service runs the stream worker and
the gRPC API in one process for that reason.

The binding holds the GIL in every call (measured with a 1 ms ticker thread: ``update``, ``flush``,
``load``, ``close`` and ``optimize`` all stop it), so the HNSW build, seconds long, runs in a child process
on a copy of the shard (:meth:`EdgeIndex.optimize`, :mod:`cartwise.index.edge_build`); callers bound the
size of one write instead (streams.catalog)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import qdrant_edge as qe

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
    SearchFilter,
    SparseVector,
    as_vector,
    facet_counts,
    hybrid_hits,
    stock_keyword,
    to_hit,
)
from cartwise.index.edge_build import build_copy

_SCHEMA_TYPES = (("keyword", qe.PayloadSchemaType.Keyword), ("float", qe.PayloadSchemaType.Float))
_E = qe.Expression
_BUILDS = ".build"  # under the index root: shard copies being optimized; never a collection
# Qdrant's default optimizer indexing_threshold (KB; the Edge config sets none): below it optimize() builds
# nothing, so neither is a copy made (verified: 6,400 × 384-d float32 is not indexed, 6,700 is)
_INDEXING_THRESHOLD_KB = 10_000


def _vectors(point: IndexPoint) -> dict:
    vectors = {DENSE: np.asarray(point.vector, dtype=np.float32).tolist()}
    if point.lexical:
        vectors[LEXICAL] = qe.SparseVector(list(point.lexical.indices), list(point.lexical.values))
    return vectors


def hybrid_request(query: HybridQuery, limit: int, flt: qe.Filter | None, hnsw_ef: int | None,
                   with_vectors: bool = True) -> qe.QueryRequest:
    """The engine query of a :class:`HybridQuery`: the lexical and the dense top ``candidates`` (both
    filtered), their union rescored by each side, and the fused score as the sum of the two rescored sides
    times the query's :meth:`HybridQuery.coefficients` (the ranking profile's fusion, cartwise/ranking.py)."""
    lexical = qe.Query.Nearest(qe.SparseVector(list(query.lexical.indices), list(query.lexical.values)),
                               using=LEXICAL)
    dense = qe.Query.Nearest(np.asarray(query.dense, dtype=np.float32).tolist(), using=DENSE)
    depth = query.depth(limit)
    sides = [qe.Prefetch(limit=depth, query=lexical, filter=flt),
             qe.Prefetch(limit=depth, query=dense, filter=flt,
                         params=qe.SearchParams(hnsw_ef=max(hnsw_ef or 0, depth)))]
    union = qe.Prefetch(limit=2 * depth, prefetches=sides, query=qe.Fusion.Rrf(k=60))
    rescored = [qe.Prefetch(limit=2 * depth, prefetches=[union], query=lexical),
                qe.Prefetch(limit=2 * depth, prefetches=[union], query=dense)]
    lexical_factor, dense_factor = query.coefficients()
    formula = _E.Sum([_E.Mult([_E.Constant(lexical_factor), _E.Variable("$score[0]")]),
                      _E.Mult([_E.Constant(dense_factor), _E.Variable("$score[1]")])])
    return qe.QueryRequest(limit=limit, prefetches=rescored,
                           query=qe.Formula(formula, defaults={"$score[0]": 0.0, "$score[1]": 0.0}),
                           with_payload=True, with_vector=[DENSE] if with_vectors else False)


def edge_filter(flt: SearchFilter | None) -> qe.Filter | None:
    """Translate a :class:`SearchFilter` to a Qdrant Edge filter (None when it restricts nothing); a
    ``grouped`` one matches a product's own fields by a nested condition on the group's members."""
    if flt is None or flt.is_empty():
        return None
    must: list = []
    if flt.category_prefix:
        must.append(qe.FieldCondition("category_prefixes",
                                      match=qe.MatchValue(CATEGORY_SEPARATOR.join(flt.category_prefix))))
    if flt.brands:
        must.append(qe.FieldCondition("brand", match=qe.MatchAny([b.lower() for b in flt.brands])))
    if flt.texts:
        must.append(qe.FieldCondition(TEXT_DIGEST, match=qe.MatchAny(sorted(flt.texts))))
    must_not = [qe.FieldCondition(TEXT_DIGEST, match=qe.MatchAny(sorted(flt.exclude_texts)))] \
        if flt.exclude_texts else []
    if flt.grouped:
        if flt.restricts_products():
            must.append(qe.NestedCondition(MEMBERS, qe.Filter(**_product_conditions(flt, "id"))))
    else:
        product = _product_conditions(flt, None)
        must += product["must"] or []
        must_not += product["must_not"] or []
    return qe.Filter(must=must or None, must_not=must_not or None)


def _product_conditions(flt: SearchFilter, id_key: str | None) -> dict:
    """The ``must`` and ``must_not`` conditions on a product's own fields; ids matched as point ids, or as the
    keyword ``id_key`` (a group member's)."""
    must: list = []
    if flt.price_min is not None or flt.price_max is not None:
        must.append(qe.FieldCondition("price", range=qe.RangeFloat(gte=flt.price_min, lte=flt.price_max)))
    if flt.in_stock is not None:
        must.append(qe.FieldCondition("stock", match=qe.MatchValue(stock_keyword(flt.in_stock))))
    ids = lambda values: qe.HasIdCondition(set(values)) if id_key is None else \
        qe.FieldCondition(id_key, match=qe.MatchAny(sorted(values)))
    if flt.ids:
        must.append(ids(flt.ids))
    return {"must": must or None, "must_not": [ids(flt.exclude_ids)] if flt.exclude_ids else None}


class _Slot:
    """One collection's live shard, with what a build of its copy needs: a lock that orders writes
    against the copy and the switch, the journal of writes made since the copy, and a gate that keeps
    readers off the shard while it is switched (readers never wait for writes)."""

    def __init__(self, shard: qe.EdgeShard) -> None:
        self.shard = shard
        self.write_lock = threading.Lock()
        self.build_lock = threading.Lock()  # one build of a collection at a time
        self.journal: list[qe.UpdateOperation] | None = None  # None: no build running
        self._gate = threading.Condition()
        self._readers = 0
        self._switching = False

    def write(self, operation: qe.UpdateOperation) -> None:
        with self.write_lock:
            self.shard.update(operation)
            if self.journal is not None:
                self.journal.append(operation)

    @contextmanager
    def reading(self) -> Iterator[qe.EdgeShard]:
        with self._gate:
            while self._switching:
                self._gate.wait()
            self._readers += 1
        try:
            yield self.shard
        finally:
            with self._gate:
                self._readers -= 1
                if not self._readers:
                    self._gate.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No reader and no writer uses the shard inside (the caller holds ``write_lock``)."""
        with self._gate:
            self._switching = True
            while self._readers:
                self._gate.wait()
        try:
            yield
        finally:
            with self._gate:
                self._switching = False
                self._gate.notify_all()


class EdgeIndex:
    """:class:`cartwise.index.VectorIndex` over Qdrant Edge shards under ``root/<collection>``.

    ``search_threads`` sizes each shard's search pool (None: one per CPU). A request here is one small
    query, so on a small machine one thread avoids handing every query to a pool thread.
    Reads and writes may come from any thread; :meth:`optimize` from a worker thread while they go on."""

    remote = False  # in-process

    def __init__(self, root: Path, search_threads: int | None = None) -> None:
        self._root = Path(root)
        self._search_threads = search_threads
        self._root.mkdir(parents=True, exist_ok=True)
        self._owner = _own(self._root)
        _recover_builds(self._root)
        self._shards: dict[str, _Slot] = {}
        self._lock = threading.Lock()  # guards the shard map, not the shards
        for path in sorted(p for p in self._root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            self._shards[path.name] = _Slot(_load(path))

    def _slot(self, name: str) -> _Slot:
        try:
            return self._shards[name]
        except KeyError:
            raise KeyError(f"collection {name!r} does not exist") from None

    def _reading(self, name: str):
        return self._slot(name).reading()

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
            self._shards[name] = _Slot(shard)

    def has_collection(self, name: str) -> bool:
        return name in self._shards

    def drop_collection(self, name: str) -> None:
        with self._lock:
            slot = self._shards.pop(name, None)
            if slot is not None:
                with slot.write_lock, slot.exclusive():
                    slot.shard.close()
            shutil.rmtree(self._root / name, ignore_errors=True)

    def collections(self) -> list[str]:
        return sorted(self._shards)

    def upsert(self, name: str, points: Sequence[IndexPoint]) -> None:
        slot = self._slot(name)
        if points:
            slot.write(qe.UpdateOperation.upsert_points([qe.Point(p.id, _vectors(p), p.payload) for p in points]))

    def delete(self, name: str, ids: Sequence[str]) -> None:
        slot = self._slot(name)
        if ids:
            slot.write(qe.UpdateOperation.delete_points(list(ids)))

    def set_payload(self, name: str, point: str, payload: dict) -> None:
        self._slot(name).write(qe.UpdateOperation.set_payload([point], payload))

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = True,
                 with_payload: bool = True) -> list[IndexHit]:
        if not ids:
            return []
        with self._reading(name) as shard:
            records = shard.retrieve(list(ids), with_payload=with_payload,
                                     with_vector=[DENSE] if with_vectors else False)
        return [IndexHit(str(r.id), 0.0, r.payload or {}, as_vector(r.vector) if with_vectors else None)
                for r in records]

    def search(self, name: str, vector: np.ndarray, limit: int, flt: SearchFilter | None = None,
               with_vectors: bool = False, exact: bool = False, hnsw_ef: int | None = None) -> list[IndexHit]:
        request = qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=DENSE),
            filter=edge_filter(flt), with_payload=True, with_vector=[DENSE] if with_vectors else False,
            params=qe.SearchParams(exact=exact, hnsw_ef=hnsw_ef))
        with self._reading(name) as shard:
            points = shard.query(request)
        return [to_hit(p, with_vectors) for p in points]

    def lexical_search(self, name: str, query: SparseVector, limit: int, flt: SearchFilter | None = None,
                       with_vectors: bool = False) -> list[IndexHit]:
        request = qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(qe.SparseVector(list(query.indices), list(query.values)),
                                                using=LEXICAL),
            filter=edge_filter(flt), with_payload=True, with_vector=[DENSE] if with_vectors else False)
        return [to_hit(p, with_vectors, float(p.score)) for p in self._lexical_query(name, request)]

    def hybrid_search(self, name: str, query: HybridQuery, limit: int, flt: SearchFilter | None = None,
                      hnsw_ef: int | None = None, with_vectors: bool = True) -> list[IndexHit]:
        request = hybrid_request(query, limit, edge_filter(flt), hnsw_ef, with_vectors)
        return hybrid_hits(self._lexical_query(name, request), query, with_vectors)

    def _lexical_query(self, name: str, request: qe.QueryRequest) -> list:
        with self._reading(name) as shard:
            try:
                return shard.query(request)
            except Exception as err:  # the binding raises bare Exceptions; only this one is the caller's fault
                if f"Not existing vector name error: {LEXICAL}" in str(err):
                    raise ValueError(f"collection {name!r} has no lexical vectors") from None
                raise

    def optimize(self, name: str) -> None:
        """Build the HNSW graph and merge segments of ``name`` (blocking; seconds for 50k points) without
        holding this process's GIL for the build; until then Edge searches new points by brute force.

        The build runs in a child process (:func:`cartwise.index.edge_build.build_copy`) on a copy of the
        shard taken under the write lock (so no write tears it; the child's load replays the copied WAL),
        while reads and writes go on against the live shard; writes are journaled. The switch then closes
        the live shard, moves the optimized copy into its place, loads it and replays the journal, with
        readers and writers held for that pause only. Skipped when fewer unindexed vectors than Qdrant's
        indexing threshold exist (nothing to build; deleted points then wait for the next build's vacuum).

        Raises KeyError when ``name`` does not exist or is dropped during the build, and
        :class:`cartwise.index.edge_build.IndexBuildError` when the child fails; the live shard then
        serves on, unchanged. Call it from a worker thread (asyncio.to_thread), not the event loop."""
        slot = self._slot(name)
        with slot.build_lock:
            live, copy = self._root / name, self._root / _BUILDS / name
            with slot.reading() as shard:
                if not _unindexed_over_threshold(shard.info(), live):
                    return
            shutil.rmtree(copy, ignore_errors=True)
            with slot.write_lock:
                shutil.copytree(live, copy)  # copies sendfile without the GIL; only writers wait
                slot.journal = []
            try:
                built = build_copy(copy)
                if built:
                    self._switch(name, slot, copy)
            finally:
                with slot.write_lock:
                    slot.journal = None
                for leftover in (copy, _old(copy), _retired(copy)):
                    shutil.rmtree(leftover, ignore_errors=True)
                with suppress(OSError):  # another collection's build may still use the folder
                    copy.parent.rmdir()

    def _switch(self, name: str, slot: _Slot, copy: Path) -> None:
        live, old = self._root / name, _old(copy)
        with slot.write_lock, slot.exclusive():
            if self._shards.get(name) is not slot:
                raise KeyError(f"collection {name!r} was dropped during its HNSW build")
            slot.shard.close()
            os.rename(live, old)
            os.rename(copy, live)
            shard = None
            try:
                shard = _load(live)
                for operation in slot.journal:
                    shard.update(operation)
            except Exception:  # serve the old shard on: it holds every write already
                if shard is not None:
                    shard.close()
                os.rename(live, copy)
                os.rename(old, live)
                slot.shard = _load(live)
                raise
            slot.shard = shard
            os.rename(old, _retired(copy))  # from now on the new shard holds writes the old one lacks

    def info(self, name: str) -> qe.ShardInfo:
        """The engine's segments, points and indexed vectors (dense and sparse) of ``name``."""
        with self._reading(name) as shard:
            return shard.info()

    def scroll(self, name: str, limit: int, flt: SearchFilter | None = None, order_by: str | None = None,
               with_vectors: bool = False) -> list[IndexHit]:
        order = qe.OrderBy(order_by, direction=qe.Direction.Desc) if order_by else None
        request = qe.ScrollRequest(limit=limit, filter=edge_filter(flt), with_payload=True,
                                   with_vector=[DENSE] if with_vectors else False, order_by=order)
        with self._reading(name) as shard:
            records, _ = shard.scroll(request)
        return [IndexHit(str(r.id), 0.0, r.payload or {}, as_vector(r.vector) if with_vectors else None)
                for r in records]

    def facet(self, name: str, key: str, limit: int, flt: SearchFilter | None = None,
              exact: bool = True) -> list[tuple[str, int]]:
        request = qe.FacetRequest(key, limit=limit, exact=exact, filter=edge_filter(flt))
        with self._reading(name) as shard:
            return facet_counts(shard.facet(request).hits)

    def count(self, name: str) -> int:
        with self._reading(name) as shard:
            return shard.count(qe.CountRequest(exact=True))

    def flush(self) -> None:
        """Persist every collection's segments, which lets Edge drop its write-ahead log up to them (it keeps
        one closed 32 MB segment). Edge flushes only when asked: the stream worker's user upserts (1.6 MB/s
        at 1,000 events/s) grew the log by 6 GB an hour, all of it replayed at the next start."""
        with self._lock:
            slots = list(self._shards.items())
        for name, slot in slots:
            with slot.write_lock:
                if self._shards.get(name) is slot:  # not dropped or switched meanwhile (that flushed it)
                    slot.shard.flush()

    def close(self) -> None:
        with self._lock:
            for slot in self._shards.values():
                with slot.write_lock, slot.exclusive():
                    slot.shard.flush()
                    slot.shard.close()
            self._shards.clear()
            self._owner.close()  # releases the root's lock


def _old(copy: Path) -> Path:
    """Where the live shard's files go while its optimized ``copy`` takes their place."""
    return copy.with_name(f"{copy.name}.old")


def _retired(copy: Path) -> Path:
    """Where the live shard's old files wait for removal once the switch is done (never restored)."""
    return copy.with_name(f"{copy.name}.retired")


def _unindexed_over_threshold(info: qe.ShardInfo, path: Path) -> bool:
    """Whether the shard at ``path`` holds more unindexed dense vector bytes than the indexing threshold.

    ``indexed_vectors_count`` counts sparse vectors too, and they are indexed as they are written
    (verified: 6,700 points with both read 6,700 before and 13,400 after optimize)."""
    config = json.loads((path / "edge_config.json").read_text())
    dims = [v["size"] for v in config["vectors"].values()]
    per_point = len(dims) + len(config.get("sparse_vectors") or {})
    unindexed = max(info.points_count * per_point - info.indexed_vectors_count, 0) // len(dims)
    return unindexed * 4 * sum(dims) > _INDEXING_THRESHOLD_KB * 1024


class IndexInUse(RuntimeError):
    """Another process owns a shard under this directory (an Edge shard has one owner)."""


def _own(root: Path):
    """Lock ``root`` for this process (an open file holding an exclusive flock) or raise IndexInUse:
    recovering an interrupted switch must not touch another process's shards."""
    owner = open(root / ".owner", "a")
    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner.close()
        raise IndexInUse(f"{root} is open in another process; stop it or use another CARTWISE_DATA_DIR") from None
    return owner


def _recover_builds(root: Path) -> None:
    """Undo what a process stopped during an HNSW build left: a live shard's files moved aside by an
    interrupted switch go back (they hold every write; the optimized copy may lack the journal's), and
    copies are removed."""
    builds = root / _BUILDS
    for old in builds.glob("*.old") if builds.is_dir() else ():
        live = root / old.name.removesuffix(".old")
        shutil.rmtree(live, ignore_errors=True)
        os.rename(old, live)
    shutil.rmtree(builds, ignore_errors=True)


def _load(path: Path) -> qe.EdgeShard:
    try:
        return qe.EdgeShard.load(str(path))  # keeps its persisted config
    except Exception as err:
        if "WouldBlock" in str(err):
            raise IndexInUse(f"{path} is open in another process; stop it or use another CARTWISE_DATA_DIR") from None
        raise

