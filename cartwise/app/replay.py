"""Publishing dataset events to Kafka with kafka-python (REES46 paced by event time when asked); the
producer comes from cartwise.kafka_io.make_producer."""

from __future__ import annotations

import time
from typing import Callable, Iterable

from kafka import KafkaProducer

from cartwise.datasets import Record
from cartwise.events import encode_event
from cartwise.settings import Topics


def publish(producer: KafkaProducer, topics: Topics, record: Record):
    """Send one record to its topic, keyed (product_id for the catalog, user_id for behavior); returns the
    send's future (kafka-python's FutureRecordMetadata)."""
    return producer.send(getattr(topics, record.topic_field), key=record.key.encode(),
                         value=encode_event(record.event))


def replay(records: Iterable[Record], producer: KafkaProducer, topics: Topics, speed: float = 0.0,
           skip: Callable[[Record], bool] = lambda r: False, progress: Callable[[], None] = lambda: None) -> int:
    """Publish ``records`` in order and flush; returns how many were sent.

    ``speed`` > 0 paces by event time (2.0 = twice real time); 0 sends as fast as the broker takes them.
    ``skip`` leaves records out (the demo holds one back to send live)."""
    sent, first_event, started = 0, None, time.monotonic()
    for record in records:
        if skip(record):
            continue
        if speed > 0:
            ts = record.event.event_time.timestamp()
            first_event = first_event if first_event is not None else ts
            delay = (ts - first_event) / speed - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
        publish(producer, topics, record)
        sent += 1
        progress()
    producer.flush()
    return sent
