"""streams/table_store.py: a Table's local mirror holds what the broker acknowledged (never a write still in
flight), is loaded when the partition is assigned again, and can be wiped."""

from __future__ import annotations

import asyncio

import faust
from faust.types import TP

from streams.faust_hooks import RawKeyTable
from streams.table_store import LocalStore

TOPIC = "mirror-histories-changelog"


def table(directory) -> RawKeyTable:
    """A Table of a fresh app over ``directory`` (no broker needed: nothing here is sent)."""
    app = faust.App("mirror", store="memory://")
    return RawKeyTable(app, name="histories", default=None, partitions=1, use_partitioner=True, key_type=str,
                       store=lambda t: LocalStore.of(t, directory))


def assigned(directory) -> RawKeyTable:
    """A Table whose partition 0 is assigned (its mirror loaded), as a restart's rebalance does it."""
    t = table(directory)
    asyncio.run(t.data.on_rebalance({TP(TOPIC, 0)}, set(), {TP(TOPIC, 0)}))
    return t


def test_acknowledged_records_survive_a_restart_and_writes_in_flight_do_not(tmp_path):
    first = assigned(tmp_path)
    assert first.changelog_topic.get_topic_name() == TOPIC and first.data.persisted_offset(TP(TOPIC, 0)) is None
    first.data.acknowledged(0, [(b"alice", b'{"n": 1}'), (b"bob", b'{"n": 2}')], 5)
    first.data.acknowledged(0, [(b"bob", None)], 6)  # a tombstone
    first.data["carol"] = {"n": 3}  # in the store, its changelog record not acknowledged yet
    asyncio.run(first.data.on_stop())

    again = assigned(tmp_path)
    assert dict(again.data.items()) == {"alice": {"n": 1}}
    assert again.data.persisted_offset(TP(TOPIC, 0)) == 6  # faust's recovery reads on from 7


def test_a_wiped_partition_starts_empty_in_memory_and_on_disk(tmp_path):
    store = assigned(tmp_path).data
    store.acknowledged(0, [(b"alice", b'{"n": 1}')], 3)
    store.wipe(0)
    assert dict(store.items()) == {} and store.persisted_offset(TP(TOPIC, 0)) is None
    asyncio.run(store.on_stop())
    assert dict(assigned(tmp_path).data.items()) == {}


def test_without_a_directory_the_store_is_memory_only():
    store = assigned(None).data
    store.acknowledged(0, [(b"alice", b'{"n": 1}')], 3)
    assert store.persisted_offset(TP(TOPIC, 0)) is None and dict(store.items()) == {}
