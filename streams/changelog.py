"""Writing a batch's keys into a faust Table with one changelog request per partition.

faust logs each Table write on its own: ``table[key] = value`` serializes the record, picks its partition,
wraps it in a FutureMessage and queues it on the producer buffer, which hands records to aiokafka one at a
time. The behavior agent writes about one history per event, and that path took a fifth of the worker's
event loop (py-spy, issue #13; docs/benchmarks.md, "Ingest"). :class:`TableBatch` is a mapping in front of
the Table for one batch: reads see the batch's own writes, and :meth:`TableBatch.flush` puts the values into
the Table's store (what ``table[key]`` reads) and appends their changelog records, serialized and
partitioned as the Table itself does (its key and value serializers, the producer's partitioner: the Table
is declared ``use_partitioner``), to be sent as one aiokafka record batch per partition, in write order.

Crash safety is the Table's own: faust flushes the producer, these sends included, before it commits the
source offsets, so an event whose offset is committed has its changelog record written. The Table's local
mirror (streams/table_store.py) takes the records as the broker acknowledges them."""

from __future__ import annotations

from typing import Any, Iterator, MutableMapping

_DELETED = object()  # a key deleted in this batch (its changelog record is a tombstone)


class TableBatch(MutableMapping):
    """The writes of one batch to ``table`` (a faust Table), buffered until :meth:`flush`; reads fall through
    to the Table. Iteration and ``len`` cover the batch's writes only."""

    def __init__(self, table) -> None:
        self.table = table
        self._writes: dict[Any, Any] = {}

    def __getitem__(self, key):
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key, default=None):
        value = self._writes[key] if key in self._writes else self.table.get(key)
        return default if value is _DELETED or value is None else value

    def __setitem__(self, key, value) -> None:
        self._writes[key] = value

    def __delitem__(self, key) -> None:
        self._writes[key] = _DELETED

    def __iter__(self) -> Iterator:
        return iter(self._writes)

    def __len__(self) -> int:
        return len(self._writes)

    def flush(self) -> int:
        """Apply the batch to the Table's store and queue its changelog records, serialized and partitioned
        as the Table does, for one send per partition (``send_batches_soon`` of streams/faust_hooks.py's
        producer); returns how many keys were written. Nothing here awaits, so a stop cannot cut a batch
        between the store and its changelog."""
        writes, self._writes = self._writes, {}
        table, topic = self.table, self.table.changelog_topic
        name, producer = topic.get_topic_name(), table.app.producer
        records: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for key, value in writes.items():
            key_bytes, _ = topic.prepare_key(key, table.key_serializer)
            if value is _DELETED:
                table.data.pop(key, None)
                value_bytes = None
            else:
                table.data[key] = value
                value_bytes, _ = topic.prepare_value(value, table.value_serializer)
            records.setdefault(producer.key_partition(name, key_bytes).partition, []).append((key_bytes, value_bytes))
        if records:
            producer.send_batches_soon(name, records, table.data.acknowledged)
        return len(writes)
