"""Table state kept on local disk between restarts, so that a restart reads only the changelog's tail.

A Table of streams/app.py (streams/faust_hooks.py's ``RawKeyTable``) keeps its working state in faust's
in-memory store (reads and streams/changelog.py's batch writes stay dict operations) and, with a
``directory``, mirrors on disk (RocksDB through rocksdict, one database per changelog partition) the changelog
records the broker has acknowledged, with the offset of the newest one, in one atomic write per acknowledged
batch. When a partition becomes this worker's to serve (active), its mirror is loaded into memory and its
offset becomes faust's persisted offset, from which faust's recovery (and streams/table_recovery.py's
completion) reads on.

Why the mirror follows acknowledgments rather than the writes themselves (what faust's own RocksDB store
does): the worker writes a history into the store before its changelog record is acknowledged, and a
kill -9 in between would leave local state ahead of the changelog. The redelivered events would then find
their ids already in the history, be counted stale and never reach the changelog: lost for every reader of
the changelog (a swap rebuild, another worker, a restart on a new disk). A mirror of acknowledged records
is at worst behind the log, which the recovery reads on from. A mirror ahead of the log (a broker that
lost or replaced it) is wiped: by the service when the embedded broker starts empty, and by the recovery
completion when the log ends at or before the mirror's offset."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from rocksdict import Options, Rdict, WriteBatch

from streams.faust_hooks import MemoryStore

OFFSET_KEY = b"o"  # the offset of the newest mirrored record; every record's key is stored as b"k" + key
KEY_PREFIX = b"k"


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's garbage collector off for a block that builds many long-lived objects without an await (a
    Table loaded, or decoded, after a restart): each history is a few dozen containers, and the collections
    they set off walked the whole growing heap again and again. The service freezes what is alive once it
    has started (cartwise/app/service.py ``freeze_heap``)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class LocalStore(MemoryStore):
    """faust's in-memory Table store, mirrored under ``directory`` (module doc); None: memory only."""

    def __init__(self, *args, directory: Path | None = None, **kwargs) -> None:
        self.directory = directory
        self._dbs: dict[int, Rdict] = {}
        super().__init__(*args, **kwargs)

    @classmethod
    def of(cls, table, directory: Path | None) -> "LocalStore":
        """The store of ``table`` (a faust Table: streams/faust_hooks.py's ``RawKeyTable`` builds it with this)."""
        return cls("memory://", table.app, table, table_name=table.name, key_type=table.key_type,
                   key_serializer=table.key_serializer, value_serializer=table.value_serializer,
                   value_type=table.value_type, loop=table.loop, options=table.options, directory=directory)

    def _path(self, partition: int) -> Path:
        return self.directory / f"{self.table.changelog_topic.get_topic_name()}-{partition}"

    def persisted_offset(self, tp) -> int | None:
        """The offset of the newest changelog record of ``tp`` this worker holds (None: none)."""
        db = self._dbs.get(tp.partition)
        offset = db.get(OFFSET_KEY) if db is not None else None
        return None if offset is None else int(offset)

    async def on_rebalance(self, assigned, revoked, newly_assigned, generation_id: int = 0) -> None:
        """Keep open, and loaded into memory, the mirrors of the partitions this worker is now active for:
        close the others, load those that became active (newly assigned, or a standby promoted, whose keys
        faust's memory store dropped when its recovery completed). Standby partitions are not mirrored: faust
        reads them from the changelog's start, as it did with the memory store alone."""
        if self.directory is None:
            return
        topic, standbys = self.table.changelog_topic.get_topic_name(), self.app.assignor.assigned_standbys()
        actives = {tp.partition for tp in assigned if tp.topic == topic and tp not in standbys}
        for partition in set(self._dbs) - actives:
            self._dbs.pop(partition).close()
        for partition in actives - set(self._dbs):
            self._load(partition)

    def _load(self, partition: int) -> None:
        """Open ``partition``'s mirror and put its records into memory (:func:`collector_paused`: 200,000
        histories loaded in 12 s with the collector running, 2.5-3 s without, on this 2-core machine)."""
        self._path(partition).parent.mkdir(parents=True, exist_ok=True)
        db = self._dbs[partition] = Rdict(str(self._path(partition)), Options(raw_mode=True))
        with collector_paused():
            for key, value in db.items(from_key=KEY_PREFIX):
                if not key.startswith(KEY_PREFIX):
                    break
                decoded = self.decode_key(key[len(KEY_PREFIX):])
                self.data[decoded] = self.decode_value(value)
                self.key_partitions[decoded] = partition

    def wipe(self, partition: int) -> None:
        """Forget ``partition``'s state, in memory and on disk (its mirror describes another log)."""
        for key in [k for k, p in self.key_partitions.items() if p == partition]:
            self.data.pop(key, None)
            self.key_partitions.pop(key, None)
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
            Rdict.destroy(str(self._path(partition)))
            self._load(partition)

    def acknowledged(self, partition: int, records: Iterable[tuple[bytes, bytes | None]], offset: int) -> None:
        """Mirror changelog ``records`` (raw key, raw value or None for a tombstone) of ``partition``, the
        newest at ``offset``, which the broker has acknowledged (or the recovery read). A partition not
        assigned (any more, or the store stopped) is left alone: its mirror stays behind, which is safe."""
        db = self._dbs.get(partition)
        if db is None:
            return
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(KEY_PREFIX + key)
            else:
                batch.put(KEY_PREFIX + key, value)
        batch.put(OFFSET_KEY, str(offset).encode())
        db.write(batch)

    def apply_changelog_batch(self, batch, to_key, to_value) -> None:
        """faust's recovery: into memory, and into the mirror (what was read from the log is acknowledged)."""
        batch = list(batch)
        super().apply_changelog_batch(batch, to_key, to_value)
        by_partition: dict[int, list] = {}
        for event in batch:
            by_partition.setdefault(event.message.partition, []).append(event.message)
        for partition, messages in by_partition.items():
            self.acknowledged(partition, [(m.key, m.value) for m in messages], max(m.offset for m in messages))

    async def on_stop(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
