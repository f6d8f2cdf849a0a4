"""streams/changelog.py: a batch's Table writes are read back before the flush, reach the Table's store at
the flush, and leave as one ordered list of changelog records per partition (tombstones for deletions)."""

import json
from types import SimpleNamespace

import pytest

from streams.changelog import TableBatch


class _Topic:
    """The changelog topic's serialization as faust's json codec does it (keys and values as JSON)."""

    def get_topic_name(self) -> str:
        return "app-user_history-changelog"

    def prepare_key(self, key, serializer):
        return json.dumps(key).encode(), None

    def prepare_value(self, value, serializer):
        return json.dumps(value).encode(), None


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def key_partition(self, topic: str, key: bytes):
        return SimpleNamespace(partition=len(key) % 2)

    def send_batches_soon(self, topic: str, records: dict, on_sent) -> None:
        self.sent.append((topic, records))
        self.on_sent = on_sent


class _Table(dict):
    """A faust Table as TableBatch uses it: ``get``, ``data`` (the store, with ``acknowledged``: the local
    mirror's, streams/table_store.py), serializers, changelog topic, app."""

    def __init__(self, **values) -> None:
        super().__init__(values)
        self.data = self
        self.key_serializer = self.value_serializer = "json"
        self.changelog_topic = _Topic()
        self.app = SimpleNamespace(producer=_Producer())

    def acknowledged(self, partition: int, records: list, offset: int) -> None:
        pass


def test_reads_see_the_batch_and_the_table_is_written_only_at_the_flush():
    table = _Table(alice={"n": 1}, bob={"n": 2})
    batch = TableBatch(table)
    batch["alice"] = {"n": 3}
    del batch["bob"]
    assert batch.get("alice") == {"n": 3} and batch.get("bob") is None and batch.get("carol") is None
    assert batch["alice"] == {"n": 3} and "bob" not in batch and len(batch) == 2
    with pytest.raises(KeyError):
        batch["bob"]
    assert table == {"alice": {"n": 1}, "bob": {"n": 2}}  # nothing written before the flush
    assert batch.flush() == 2
    assert table == {"alice": {"n": 3}} and len(batch) == 0


def test_flush_sends_each_partition_its_records_in_write_order_with_tombstones():
    table = _Table(bob={"n": 2})
    batch = TableBatch(table)
    batch["ann"] = {"n": 1}  # key b'"ann"' (5 bytes): partition 1
    batch["bobby"] = {"n": 2}  # 7 bytes: partition 1
    del batch["bob"]  # 5 bytes: partition 1, a tombstone
    batch["al"] = {"n": 4}  # 4 bytes: partition 0
    batch.flush()
    [(topic, records)] = table.app.producer.sent
    assert topic == "app-user_history-changelog"
    assert records == {1: [(b'"ann"', b'{"n": 1}'), (b'"bobby"', b'{"n": 2}'), (b'"bob"', None)],
                       0: [(b'"al"', b'{"n": 4}')]}
    assert table.app.producer.on_sent == table.acknowledged  # the store's mirror takes what the broker acknowledges


def test_an_empty_batch_sends_nothing():
    table = _Table()
    assert TableBatch(table).flush() == 0 and table.app.producer.sent == []
