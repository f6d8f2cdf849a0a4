"""Retention, compaction and merging for the durable embedded broker's store: what Tansu 0.6.0 lacks.

Tansu's S3 engine stores one object per produce request per partition, never deletes one (its
``delete_records`` is ``todo!()``), never compacts, and lists every object of a partition on every fetch of
it, so the embedded broker slowed and grew with every event (issue #28). This process keeps each partition
small underneath it, the way Kafka's log retention and log cleaner do, every ``interval_s``:

- **covered** batches go: a batch whose offsets all lie inside an earlier batch's span is a rewrite's source
  that a kill -9 left behind (its records are in the rewrite);
- **retention** (topics without ``cleanup.policy=compact``): the oldest batches whose newest record was
  written more than ``retention_s`` ago go, but never one holding an offset at or above what the worker
  group committed on that partition (nor any, on a topic it consumes, before it commits there);
- **compaction** (``cleanup.policy=compact`` topics and faust's Table changelogs): once the batches written
  since the last compaction weigh as much as the rest (Kafka's min.cleanable.dirty.ratio 0.5), only each
  key's last record is kept, and a tombstone (null value; on the catalog topic an ``op: delete`` event) only
  for ``retention_s``;
- **merging**: runs of small batches at least ``merge_min_age_s`` old become batches of about
  ``target_bytes`` (1 MB: aiokafka's partition fetch size), consumed or not, so a partition holds few
  objects whatever the retention and however far the worker lags.

Invariants relied on (Tansu 0.6.0 at 510f3e2, ``tansu-storage/src/dynostore.rs`` and ``service/fetch.rs``):
an object is named by its batch's base offset and holds one RecordBatch v2 (cartwise/app/record_batches.py);
a fetch lists the partition's objects, reads those from the fetch offset on and also the one before it
when the offset falls inside it (so a position inside a merged batch reads correctly, records below it
skipped by the client); the high watermark lives in ``watermark.json``, never touched here; ListOffsets
EARLIEST answers the base offset of the object modified first, so a rewrite keeps its first source's
modification time (s3rver patch: ``x-amz-meta-cartwise-mtime-ms``) and a log only ever loses a prefix;
Tansu writes only new objects above the high watermark, so this process is the only one that replaces or
deletes one. The newest object of a partition is never touched (Kafka's active segment): a fetch loop
that advanced by a compacted batch's record count would re-read a gapped last batch until its byte limit,
and an emptied partition would leave readers from offset 0 waiting at a high watermark with no records.

Crash safety: a rewrite is written whole under its first source's name (s3rver renames it into place) before
its other sources are deleted, so a kill -9 leaves either the sources or the rewrite plus covered sources,
which the next pass deletes; nothing is deleted whose records are not in a kept batch or let go by policy.
Fetches never wait on this process: a deleted object leaves s3rver's listings at once but stays readable
for 10 s (s3rver patch), so a fetch that listed it still reads it. Such a fetch, listing a merge's sources
before the merge and reading the first after it, returns the merged batch and then the other sources:
records it has already passed, which Kafka clients skip (aiokafka's PartitionRecords and kafka-python's
fetcher drop records below the position they have reached)."""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import time
import urllib.parse
from xml.etree import ElementTree
from xml.sax.saxutils import escape
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from cartwise.app.record_batches import (HEADER_BYTES, BatchError, BatchHeader, Record, build_batch, read_header,
                                         read_records)

log = logging.getLogger(__name__)
CLUSTER = "tansu_cluster"
OBJECT_SUFFIX = ".batch._S3rver_object"
METADATA_SUFFIX = ".batch._S3rver_metadata.json"
MERGE_MIN_AGE_S = 5.0  # a batch this young may still be read by a consumer catching up: merge it later
TARGET_BYTES = 1 << 20
MIN_DIRTY_BYTES = 256 << 10  # below this a compaction costs more than it saves


@dataclass(frozen=True)
class StoredBatch:
    """One stored batch object: offsets ``base`` .. ``end`` (inclusive), ``size`` bytes, ``mtime_ms`` the
    object's modification time and ``written_ms`` when its newest record was written (ms since the epoch)."""

    base: int
    size: int
    mtime_ms: int
    written_ms: int
    header: BatchHeader
    path: Path

    @property
    def end(self) -> int:
        return self.base + self.header.last_offset_delta


@dataclass(frozen=True)
class Rewrite:
    """Replace ``sources`` (consecutive batches, ``survivors`` of their records) by one batch named after
    the first; no survivors: delete them all."""

    sources: tuple[StoredBatch, ...]
    survivors: tuple[Record, ...] | None = None  # None: every record (a merge)


@dataclass
class Plan:
    """What one pass does to one partition: ``deletes`` (batches that go), then ``rewrites``."""

    deletes: list[StoredBatch] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)


@dataclass(frozen=True)
class Policy:
    """How one partition is kept: ``compact`` or by time; ``frontier``: the first offset the worker group
    has not committed (None: no group holds it); times in ms; ``is_tombstone`` tells a deletion record."""

    compact: bool
    frontier: int | None
    now_ms: int
    retention_ms: int
    merge_min_age_ms: int = int(MERGE_MIN_AGE_S * 1000)
    target_bytes: int = TARGET_BYTES
    is_tombstone: Callable[[Record], bool] = lambda record: record.value is None


def readable(records: list[Record], after: int = -1) -> list[Record]:
    """``records`` (in stored order) as a consumer that has read up to offset ``after`` reads them: an offset
    already read is skipped. Only a store written before s3rver honoured conditional writes holds batches
    that overlap (patches/: putObjectIf)."""
    kept = []
    for record in records:
        if record.offset > after:
            kept.append(record)
            after = record.offset
    return kept


def covered(batches: list[StoredBatch]) -> list[StoredBatch]:
    """Batches (base-ascending) whose whole span lies inside an earlier batch's: a crashed rewrite's sources."""
    found, reach = [], -1
    for batch in batches:
        if batch.end <= reach:
            found.append(batch)
        reach = max(reach, batch.end)
    return found


def expired_prefix(batches: list[StoredBatch], policy: Policy) -> list[StoredBatch]:
    """The oldest batches that retention lets go (module doc); ``batches`` exclude the active one."""
    gone = []
    for batch in batches:
        held = policy.frontier is not None and batch.end >= policy.frontier
        if held or batch.written_ms >= policy.now_ms - policy.retention_ms:
            break
        gone.append(batch)
    return gone


def merge_runs(batches: list[StoredBatch], policy: Policy) -> list[Rewrite]:
    """Runs of consecutive small batches, each up to ``target_bytes``, that are old enough; ``batches``
    exclude the active one. A run of one is left alone. Batches the group has not consumed yet are merged
    too: a lagging worker's fetches list its partitions on every read, so they must stay small most of all
    then (module doc: what a reader sees of a merge)."""
    runs, run, size = [], [], 0
    for batch in batches:
        ready = (batch.size < policy.target_bytes // 2 and batch.header.rewritable
                 and batch.written_ms < policy.now_ms - policy.merge_min_age_ms)
        if run and (not ready or size + batch.size > policy.target_bytes):
            runs.append(run)
            run, size = [], 0
        if ready:
            run, size = run + [batch], size + batch.size
    runs.append(run)
    return [Rewrite(tuple(r)) for r in runs if len(r) > 1]


def compaction(contents: list[tuple[StoredBatch, list[Record]]], latest: dict[bytes, int],
               policy: Policy) -> list[Rewrite]:
    """Rewrites that keep, of ``contents`` (every batch but the active one, with its records), each key's
    last record (``latest``: key -> its last offset in the whole partition), tombstones only within
    retention, and records without a key; packed into runs of about ``target_bytes``. Unchanged lone
    batches are left alone."""
    rewrites, run, kept, size = [], [], [], 0
    for batch, records in contents:
        survivors = [r for r in records if _survives(r, batch, latest, policy)]
        weight = sum(len(r.key or b"") + len(r.value or b"") + 16 for r in survivors)
        if run and size + weight > policy.target_bytes:
            rewrites.append(Rewrite(tuple(run), tuple(kept)))
            run, kept, size = [], [], 0
        run, kept, size = run + [batch], kept + survivors, size + weight
    if run:
        rewrites.append(Rewrite(tuple(run), tuple(kept)))
    return [r for r in rewrites if len(r.sources) > 1
            or len(r.survivors) < r.sources[0].header.record_count]


def _survives(record: Record, batch: StoredBatch, latest: dict[bytes, int], policy: Policy) -> bool:
    if record.key is None:
        return True
    if latest.get(record.key) != record.offset:
        return False
    return not policy.is_tombstone(record) or batch.written_ms >= policy.now_ms - policy.retention_ms


class PartitionFiles:
    """One partition's ``records/`` folder in s3rver's directory, read through its listing: the stored
    batches, headers cached by (name, size, mtime) since objects are immutable once renamed into place."""

    def __init__(self, directory: Path, store: "StoreClient", prefix: str) -> None:
        self.directory, self.store, self.prefix = directory, store, prefix
        self._headers: dict[tuple[str, int, int], tuple[BatchHeader, int]] = {}

    def batches(self) -> list[StoredBatch]:
        """The partition's listed batches, base-ascending (one deleted meanwhile is skipped)."""
        found, seen = [], {}
        for key in self.store.list_keys(self.prefix):
            name = key.rsplit("/", 1)[-1]
            path = self.directory / f"{name}._S3rver_object"
            try:
                stat = path.stat()
                cache_key = (name, stat.st_size, stat.st_mtime_ns)
                header, written_ms = self._headers.get(cache_key) or self._read(path, stat)
            except (FileNotFoundError, BatchError):
                continue
            seen[cache_key] = (header, written_ms)
            found.append(StoredBatch(int(name[:20]), stat.st_size, stat.st_mtime_ns // 1_000_000, written_ms,
                                     header, path))
        self._headers = seen
        return sorted(found, key=lambda b: b.base)

    @staticmethod
    def _read(path: Path, stat: os.stat_result) -> tuple[BatchHeader, int]:
        with open(path, "rb") as f:
            header = read_header(f.read(HEADER_BYTES))
        metadata = json.loads(Path(str(path)[:-len(OBJECT_SUFFIX)] + METADATA_SUFFIX).read_text() or "{}")
        return header, int(metadata.get("x-amz-meta-cartwise-written-ms", stat.st_mtime_ns // 1_000_000))


class StoreClient:
    """s3rver on 127.0.0.1:``port`` (bucket ``bucket``) over its S3 API: listings from its key index (what
    Tansu sees), and PUTs and DELETEs that keep that index in step."""

    def __init__(self, port: int, bucket: str) -> None:
        self.port, self.bucket = port, bucket
        self._connection: http.client.HTTPConnection | None = None

    def list_keys(self, prefix: str) -> list[str]:
        """Every batch key under ``prefix`` (ListObjectsV2, page by page). Raises OSError on failure."""
        keys, token = [], None
        while True:
            query = {"list-type": "2", "prefix": prefix, **({"continuation-token": token} if token else {})}
            page = ElementTree.fromstring(self._request("GET", "?" + urllib.parse.urlencode(query)))
            keys += [e.text for e in page.findall("{*}Contents/{*}Key") if e.text.endswith(".batch")]
            token = page.findtext("{*}NextContinuationToken")
            if page.findtext("{*}IsTruncated") != "true" or not token:
                return keys

    def put(self, key: str, body: bytes, mtime_ms: int, written_ms: int) -> None:
        """Store ``body`` under ``key`` with the given modification time. Raises OSError on failure."""
        self._request("PUT", "/" + urllib.parse.quote(key), body, {
            "x-amz-meta-cartwise-mtime-ms": str(mtime_ms), "x-amz-meta-cartwise-written-ms": str(written_ms),
            "Content-Type": "binary/octet-stream"})

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (readable for s3rver's grace), a thousand per DeleteObjects request. Raises OSError."""
        for start in range(0, len(keys), 1000):
            objects = "".join(f"<Object><Key>{escape(key)}</Key></Object>" for key in keys[start:start + 1000])
            self._request("POST", "?delete", f"<Delete>{objects}</Delete>".encode(), {"Content-Type": "application/xml"})

    def _request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        """One request on the kept-alive connection (opened again once when it was dropped)."""
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self._connection.request(method, f"/{self.bucket}{path}", body=body, headers=headers or {})
                response = self._connection.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        if response.status >= 300:
            raise OSError(f"s3rver {method} {path}: HTTP {response.status}")
        return data


class LogMaintenance:
    """The passes over every partition of the store at ``root`` (s3rver's directory, bucket ``bucket``).

    ``group`` is the worker group whose committed offsets hold retention back, ``held_topics`` the topics it
    consumes (held entirely until it commits), ``catalog_topic`` the topic whose ``op: delete`` events are
    tombstones; ``retention_s`` in seconds."""

    def __init__(self, root: Path, bucket: str, store: StoreClient, group: str, held_topics: Iterable[str],
                 catalog_topic: str, retention_s: float, merge_min_age_s: float = MERGE_MIN_AGE_S,
                 min_dirty_bytes: int = MIN_DIRTY_BYTES) -> None:
        self.cluster_dir = root / bucket / "clusters" / CLUSTER
        self.store, self.group, self.held = store, group, set(held_topics)
        self.catalog_topic, self.retention_ms = catalog_topic, int(retention_s * 1000)
        self.merge_min_age_ms, self.min_dirty_bytes = int(merge_min_age_s * 1000), min_dirty_bytes
        self._files: dict[Path, PartitionFiles] = {}
        self._clean_end: dict[Path, int] = {}  # partition -> the last offset its last compaction covered
        self._seen_end: dict[Path, int] = {}  # partition -> the last offset of the batches seen so far
        self.produced: dict[str, dict[str, int]] = {}  # topic -> objects and records producers wrote since start

    def run_pass(self) -> dict[str, int]:
        """One pass over every partition. Returns counts: ``deleted`` and ``written`` objects."""
        counts = {"deleted": 0, "written": 0}
        compacted = self._compacted_topics()
        for records_dir in sorted(self.cluster_dir.glob("topics/*/partitions/*/records")):
            topic, partition = records_dir.parent.parent.parent.name, int(records_dir.parent.name)
            policy = self._policy(topic, partition, topic in compacted)
            prefix = f"clusters/{CLUSTER}/topics/{topic}/partitions/{partition:010d}/records/"
            try:
                plan = self._plan(records_dir, prefix, policy,
                                  self.produced.setdefault(topic, {"objects": 0, "records": 0}))
                for key, value in self._apply(prefix, plan).items():
                    counts[key] += value
            except (BatchError, ValueError) as exc:  # this partition waits for a later pass; the others go on
                log.warning("%s[%d]: %s", topic, partition, exc)
        return counts

    def _policy(self, topic: str, partition: int, compact: bool) -> Policy:
        frontier = self._committed(topic, partition)
        if frontier is None and topic in self.held:
            frontier = 0
        is_tombstone = _catalog_tombstone if topic == self.catalog_topic else (lambda r: r.value is None)
        return Policy(compact, frontier, int(time.time() * 1000), self.retention_ms, self.merge_min_age_ms,
                      is_tombstone=is_tombstone)

    def _plan(self, records_dir: Path, prefix: str, policy: Policy, produced: dict[str, int]) -> Plan:
        files = self._files.setdefault(records_dir, PartitionFiles(records_dir, self.store, prefix))
        batches = files.batches()
        new = [b for b in batches if b.base > self._seen_end.get(records_dir, -1)]
        produced["objects"] += len(new)
        produced["records"] += sum(b.header.record_count for b in new)
        if batches:
            self._seen_end[records_dir] = max(self._seen_end.get(records_dir, -1), batches[-1].end)
        gone = covered(batches)
        gone_bases = {b.base for b in gone}  # a membership test on the batches themselves was quadratic
        kept = [b for b in batches if b.base not in gone_bases]
        older = kept[:-1]  # the newest is the active segment: never touched (module doc)
        if policy.compact:
            rewrites = self._compaction(records_dir, kept, policy)
            return Plan(gone, rewrites or merge_runs(older, policy))
        expired = expired_prefix(older, policy)
        return Plan(gone + expired, merge_runs(older[len(expired):], policy))

    def _compaction(self, records_dir: Path, kept: list[StoredBatch], policy: Policy) -> list[Rewrite]:
        clean_end = self._clean_end.get(records_dir, -1)
        dirty = sum(b.size for b in kept[:-1] if b.base > clean_end)
        clean = sum(b.size for b in kept[:-1] if b.base <= clean_end)
        if len(kept) < 2 or dirty < max(clean, self.min_dirty_bytes) or not all(b.header.rewritable for b in kept):
            return []
        contents, last = [], -1
        for batch in kept:
            records = readable(read_records(batch.base, batch.path.read_bytes()), last)
            last = records[-1].offset if records else last
            contents.append((batch, records))
        latest = {r.key: r.offset for _, records in contents for r in records if r.key is not None}
        self._clean_end[records_dir] = kept[-2].end
        return compaction(contents[:-1], latest, policy)

    def _apply(self, prefix: str, plan: Plan) -> dict[str, int]:
        """Write each rewrite under its first source's key, then delete in one request what goes: the plan's
        deletes and every rewrite's other sources (all of them when nothing of a rewrite survives)."""
        gone, written = list(plan.deletes), 0
        for rewrite in plan.rewrites:
            first = rewrite.sources[0]
            records = rewrite.survivors
            if records is None:
                records = readable([r for b in rewrite.sources for r in read_records(b.base, b.path.read_bytes())])
            if records:
                self.store.put(f"{prefix}{first.base:020d}.batch", build_batch(first.base, list(records)),
                               first.mtime_ms, max(b.written_ms for b in rewrite.sources))
                written += 1
            gone += rewrite.sources[1:] if records else rewrite.sources
        self.store.delete([f"{prefix}{batch.base:020d}.batch" for batch in gone])
        return {"deleted": len(gone), "written": written}

    def _committed(self, topic: str, partition: int) -> int | None:
        path = (self.cluster_dir / "groups" / "consumers" / self.group / "offsets" / topic / "partitions"
                / f"{partition:010d}.json._S3rver_object")
        try:
            return int(json.loads(path.read_bytes())["offset"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def _compacted_topics(self) -> set[str]:
        """Topics created with cleanup.policy=compact (Tansu's meta.json), and faust's Table changelogs."""
        try:
            topics = json.loads((self.cluster_dir / "meta.json._S3rver_object").read_bytes())["topics"]
        except (FileNotFoundError, ValueError, KeyError):
            return set()
        return {name for name, meta in topics.items()
                if name.endswith("-changelog") or any(
                    c.get("name") == "cleanup.policy" and "compact" in (c.get("value") or "")
                    for c in meta.get("topic", {}).get("configs") or [])}


def _catalog_tombstone(record: Record) -> bool:
    """A catalog record that deletes its product (cartwise.events: ``{"op": "delete", ...}``), or a null one."""
    if record.value is None:
        return True
    if b"delete" not in record.value:
        return False
    try:
        return json.loads(record.value).get("op") == "delete"
    except (ValueError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> None:
    """``python -m cartwise.app.log_maintenance``: passes every ``--interval-s`` until killed (the embedded
    broker starts it beside s3rver, at a lower CPU priority, and it dies with the service)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="s3rver's directory")
    parser.add_argument("--port", type=int, required=True, help="s3rver's port")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--group", required=True, help="the worker group whose commits hold retention back")
    parser.add_argument("--held-topic", action="append", default=[], help="a topic the group consumes")
    parser.add_argument("--catalog-topic", required=True)
    parser.add_argument("--retention-s", type=float, required=True)
    parser.add_argument("--interval-s", type=float, default=30.0)
    parser.add_argument("--stats", type=Path, help="JSON file rewritten after each pass: topic -> objects and "
                                                   "records the producers wrote since start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.nice(10)
    maintenance = LogMaintenance(args.root, args.bucket, StoreClient(args.port, args.bucket), args.group,
                                 args.held_topic, args.catalog_topic, args.retention_s)
    while True:
        started = time.monotonic()
        try:
            counts = maintenance.run_pass()
            if args.stats:
                args.stats.with_suffix(".tmp").write_text(json.dumps(maintenance.produced, sort_keys=True))
                args.stats.with_suffix(".tmp").replace(args.stats)
            if any(counts.values()):
                log.info("pass in %.2f s: %d objects written, %d deleted", time.monotonic() - started,
                         counts["written"], counts["deleted"])
        except (OSError, BatchError, ValueError) as exc:  # the next pass retries; nothing is lost by waiting
            log.warning("pass failed: %s", exc)
        time.sleep(max(0.0, args.interval_s - (time.monotonic() - started)))


if __name__ == "__main__":
    main()
