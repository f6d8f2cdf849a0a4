"""The log maintenance's pure parts: RecordBatch v2 round trips, and which batches a pass deletes, merges
and compacts (cartwise/app/record_batches.py, cartwise/app/log_maintenance.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartwise.app.log_maintenance import (Policy, StoredBatch, _catalog_tombstone, compaction, covered,
                                          expired_prefix, merge_runs, readable)
from cartwise.app.record_batches import BatchError, Record, build_batch, read_header, read_records

NOW = 1_000_000_000
MINUTE = 60_000

records_strategy = st.lists(
    st.tuples(st.integers(1, 5), st.integers(0, 2**40), st.one_of(st.none(), st.binary(max_size=20)),
              st.one_of(st.none(), st.binary(max_size=50)),
              st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=5))), max_size=2)),
    min_size=1, max_size=30)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**12), records_strategy)
def test_a_built_batch_reads_back_every_record_with_its_offset(base, specs):
    offset, records = base, []
    for gap, timestamp, key, value, headers in specs:
        offset += gap
        records.append(Record(offset, timestamp, key, value, tuple(headers)))
    data = build_batch(records[0].offset, records)
    assert read_records(records[0].offset, data) == records
    header = read_header(data)
    assert header.record_count == len(records)
    assert header.last_offset_delta == records[-1].offset - records[0].offset
    assert header.rewritable


def test_a_corrupt_batch_is_refused():
    data = bytearray(build_batch(0, [Record(0, 1, b"k", b"v", ())]))
    data[-1] ^= 0xFF
    with pytest.raises(BatchError):
        read_records(0, bytes(data))
    with pytest.raises(ValueError):
        build_batch(5, [Record(4, 1, b"k", b"v", ())])


def batch(base: int, count: int, *, size: int = 1000, written_ms: int = NOW - 10 * MINUTE) -> StoredBatch:
    """A stored batch of ``count`` consecutive offsets (header taken from a real built batch)."""
    data = build_batch(base, [Record(base + i, 0, b"k", b"v", ()) for i in range(count)])
    return StoredBatch(base, size, written_ms, written_ms, read_header(data), Path(f"/nowhere/{base}"))


def policy(**kw) -> Policy:
    return Policy(**{"compact": False, "frontier": None, "now_ms": NOW, "retention_ms": 5 * MINUTE,
                     "target_bytes": 10_000, **kw})


def test_covered_finds_a_crashed_rewrites_leftover_sources():
    merged = batch(0, 30)
    leftovers = [batch(10, 10), batch(20, 10)]
    assert covered([merged, *leftovers, batch(30, 5)]) == leftovers


def test_retention_deletes_an_old_prefix_and_never_what_the_group_has_not_committed():
    old = [batch(i * 10, 10) for i in range(5)]
    young = batch(50, 10, written_ms=NOW - MINUTE)
    assert expired_prefix(old + [young], policy()) == old
    assert expired_prefix(old + [young], policy(frontier=25)) == old[:2]  # batch 20..29 holds offset 25
    assert expired_prefix(old, policy(frontier=0)) == []
    # only a prefix goes: an old batch after a young one stays
    assert expired_prefix([young, *old], policy()) == []


def test_merging_packs_old_small_batches_up_to_the_target_whatever_the_group_committed():
    batches = [batch(i * 10, 10, size=3000) for i in range(7)]
    for frontier in (None, 0, 35):  # a lagging worker's partition must stay small too (issue #28's soak)
        runs = merge_runs(batches, policy(frontier=frontier))
        assert [[b.base for b in r.sources] for r in runs] == [[0, 10, 20], [30, 40, 50]]
    assert all(r.survivors is None for r in runs)
    # too young to merge, or too big to need it
    assert merge_runs([batch(0, 1, written_ms=NOW), batch(1, 1, written_ms=NOW)], policy()) == []
    assert merge_runs([batch(0, 10, size=6000), batch(10, 10, size=6000)], policy()) == []


def contents(*batches: list[tuple[bytes | None, bytes | None]], written_ms: int = NOW - 10 * MINUTE):
    out, offset = [], 0
    for records in batches:
        recs = [Record(offset + i, 0, key, value, ()) for i, (key, value) in enumerate(records)]
        header = read_header(build_batch(offset, recs))
        out.append((StoredBatch(offset, 100, written_ms, written_ms, header, Path(f"/nowhere/{offset}")), recs))
        offset += len(records)
    return out


def latest_of(parts) -> dict[bytes, int]:
    return {r.key: r.offset for _, records in parts for r in records if r.key is not None}


def test_compaction_keeps_each_keys_last_record_and_tombstones_within_retention():
    parts = contents([(b"a", b"1"), (b"b", b"1")], [(b"a", b"2"), (None, b"keyless")], [(b"b", None), (b"c", b"1")])
    latest = latest_of(parts)
    [rewrite] = compaction(parts, latest, policy(compact=True, retention_ms=60 * MINUTE))
    assert [b.base for b in rewrite.sources] == [0, 2, 4]
    assert [(r.key, r.value) for r in rewrite.survivors] == [(b"a", b"2"), (None, b"keyless"), (b"b", None),
                                                             (b"c", b"1")]
    [expired] = compaction(parts, latest, policy(compact=True, retention_ms=MINUTE))
    assert (b"b", None) not in [(r.key, r.value) for r in expired.survivors]


def test_compaction_leaves_a_lone_unchanged_batch_alone():
    parts = contents([(b"a", b"1"), (b"b", b"1")])
    assert compaction(parts, latest_of(parts), policy(compact=True)) == []


def test_a_catalog_delete_event_is_a_tombstone():
    assert _catalog_tombstone(Record(0, 0, b"p1", b'{"op": "delete", "product_id": "p1"}', ()))
    assert _catalog_tombstone(Record(0, 0, b"p1", None, ()))
    assert not _catalog_tombstone(Record(0, 0, b"p1", b'{"op": "upsert", "title": "delete key"}', ()))


def test_overlapping_batches_read_as_a_consumer_reads_them():
    """A store written before s3rver honoured conditional writes: a batch at 68 over the end of one at 67."""
    first = [Record(67, 0, b"a", b"1", ()), Record(68, 0, b"a", b"2", ())]
    second = [Record(68, 0, b"b", b"lost", ()), Record(69, 0, b"b", b"3", ())]
    assert [r.value for r in readable(first + second)] == [b"1", b"2", b"3"]
    assert [r.value for r in readable(second, after=68)] == [b"3"]
