"""Kafka RecordBatch v2 (magic 2) objects as Tansu's S3 engine stores them, read and rewritten for the
embedded broker's log maintenance (cartwise/app/log_maintenance.py).

Tansu 0.6.0 keeps each produce request's batch for a partition as one object named by its base offset and
writes the batch's own base-offset field as 0, so a record's offset is the object's base offset plus the
record's offset delta. Reading and building use kafka-python's own codecs (CRC-32C included); a rebuilt
batch is uncompressed, not transactional and has no producer id (the embedded broker's producers are not
idempotent: kafka_io), and keeps each record's key, value, headers, timestamp and offset."""

from __future__ import annotations

from dataclasses import dataclass

from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

HEADER_BYTES = DefaultRecordBatch.HEADER_STRUCT.size  # 61: a batch's fixed header
_NO_LIMIT = 2**31 - 1


class BatchError(ValueError):
    """An object that is not one RecordBatch v2 this module can rewrite (control or transactional batches,
    an older magic, a truncated or corrupt one)."""


@dataclass(frozen=True)
class Record:
    """One record as a consumer sees it: ``offset`` absolute, ``timestamp`` in ms since the epoch."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class BatchHeader:
    """What a stored batch's fixed header says: ``last_offset_delta`` (its span is offsets base ..
    base + last_offset_delta), ``record_count`` (fewer than the span once compacted), ``max_timestamp`` (ms)."""

    last_offset_delta: int
    record_count: int
    max_timestamp: int
    rewritable: bool  # magic 2, not a control or transactional batch


def read_header(head: bytes) -> BatchHeader:
    """The header of a batch from its first HEADER_BYTES bytes. Raises BatchError when too short."""
    if len(head) < HEADER_BYTES:
        raise BatchError(f"{len(head)} bytes is shorter than a batch header")
    (_, _, _, magic, _, attributes, last_offset_delta, _, max_timestamp, _, _, _,
     record_count) = DefaultRecordBatch.HEADER_STRUCT.unpack_from(head)
    rewritable = magic == 2 and not attributes & (DefaultRecordBatch.TRANSACTIONAL_MASK
                                                  | DefaultRecordBatch.CONTROL_MASK)
    return BatchHeader(last_offset_delta, record_count, max_timestamp, rewritable)


def read_records(base_offset: int, data: bytes) -> list[Record]:
    """Every record of the stored batch ``data`` whose object is named ``base_offset``. Raises BatchError
    for a batch this module cannot rewrite or whose CRC does not match."""
    if not read_header(data).rewritable:
        raise BatchError("a control, transactional or pre-v2 batch")
    batch = DefaultRecordBatch(bytes(data))
    if not batch.validate_crc():
        raise BatchError("CRC-32C mismatch")
    return [Record(base_offset + r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in batch]


def build_batch(base_offset: int, records: list[Record]) -> bytes:
    """One stored batch (object named ``base_offset``) holding ``records`` (offset-ascending, all at or above
    ``base_offset``, at least one). Its span ends at the last record; offsets between records stay unused,
    as in a compacted Kafka log. Raises ValueError for records out of order or below ``base_offset``."""
    if not records:
        raise ValueError("a batch needs at least one record")
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=_NO_LIMIT)
    previous = base_offset - 1
    for record in records:
        if record.offset <= previous:
            raise ValueError(f"record offset {record.offset} after {previous}")
        builder.append(record.offset - base_offset, record.timestamp, record.key, record.value,
                       list(record.headers))
        previous = record.offset
    return bytes(builder.build())
