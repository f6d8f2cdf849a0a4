"""Kafka I/O: client construction with durability settings that fit the broker, topic set-up, and
reading a topic from given offsets to its current end.

Durability depends on who runs the broker (``Settings.embedded_broker``):

- a configured broker (``CARTWISE_KAFKA_BOOTSTRAP``, Apache Kafka in production): ``acks=all`` and
  idempotent producers, so a retried send is written once (``CARTWISE_KAFKA_IDEMPOTENCE=false`` turns
  idempotence off for a Kafka-protocol broker without InitProducerId, such as a Tansu run by hand);
- the embedded Tansu broker that Cartwise starts itself: one node, no InitProducerId, so ``acks=1``
  without idempotence and one request in flight (retries then cannot reorder).

Topic readers use kafka-python with manual assignment: the embedded broker serves no kafka-python
consumer groups, and no reader should join the stream worker's group.

Security (SASL and/or TLS, ``CARTWISE_KAFKA_SECURITY_PROTOCOL`` and friends) applies to a configured broker:
every kafka-python client gets :func:`kafka_python_security`, every aiokafka client (and faust's, through
``streams/faust_config.py``) the same as :func:`aiokafka_security`. The embedded broker is plaintext on loopback.

A read to the end ends at the high watermark the fetch responses report, or where no record has come for
``END_GAP_S`` below it: Tansu on its disk store reserves a produce's offsets before it stores the batch,
so a kill -9 mid-produce leaves a gap that nothing was acknowledged in (measured: a changelog whose
records end at 1455 under a high watermark of 1507). A fetch inside a gap returns the records after it;
at the end of the log there are none, and the read would wait forever."""

from __future__ import annotations

import logging
import ssl
import time
from typing import Iterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from cartwise.settings import Settings

log = logging.getLogger(__name__)
END_GAP_S = 10.0  # no record below the high watermark for this long: the rest is a gap (module doc)


def _security_protocol(settings: Settings) -> str:
    return "PLAINTEXT" if settings.embedded_broker else settings.kafka_security_protocol


def _sasl(settings: Settings) -> dict:
    if not _security_protocol(settings).startswith("SASL"):
        return {}
    return {"sasl_mechanism": settings.kafka_sasl_mechanism, "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value()}


def kafka_python_security(settings: Settings) -> dict:
    """kafka-python keyword arguments for the broker's security protocol, SASL credentials and TLS files
    (empty for plaintext, and always for the embedded broker). Holds the SASL password: never log it."""
    protocol = _security_protocol(settings)
    if protocol == "PLAINTEXT":
        return {}
    files = {}
    if protocol.endswith("SSL"):
        files = {key: str(path) for key, path in (("ssl_cafile", settings.kafka_ssl_cafile),
                                                 ("ssl_certfile", settings.kafka_ssl_certfile),
                                                 ("ssl_keyfile", settings.kafka_ssl_keyfile)) if path is not None}
    return {"security_protocol": protocol, **_sasl(settings), **files}


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of aiokafka and faust clients (hostname checked; the system's CAs unless
    ``kafka_ssl_cafile``), or None when the protocol is not SSL / SASL_SSL. Raises OSError (ssl.SSLError)
    for an unreadable file."""
    if not _security_protocol(settings).endswith("SSL"):
        return None
    return create_ssl_context(cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile,
                              keyfile=settings.kafka_ssl_keyfile)


def aiokafka_security(settings: Settings) -> dict:
    """aiokafka keyword arguments for the broker's security (:func:`kafka_python_security` with an SSL
    context instead of files). Holds the SASL password: never log it."""
    protocol = _security_protocol(settings)
    if protocol == "PLAINTEXT":
        return {}
    context = kafka_ssl_context(settings)
    return {"security_protocol": protocol, **_sasl(settings), **({"ssl_context": context} if context else {})}


def idempotent(settings: Settings) -> bool:
    """Whether producers are idempotent with ``acks=all`` (a configured broker that supports it)."""
    return not settings.embedded_broker and settings.kafka_idempotence


def producer_config(settings: Settings) -> dict:
    """kafka-python producer keyword arguments for ``settings``' broker (module doc)."""
    if idempotent(settings):
        durability = {"acks": "all", "enable_idempotence": True}
    else:  # one request in flight, so a retry cannot reorder what an idempotent producer would guard
        durability = {"acks": 1 if settings.embedded_broker else "all", "enable_idempotence": False,
                      "max_in_flight_requests_per_connection": 1}
    return {"bootstrap_servers": settings.bootstrap, "linger_ms": 5, "retries": 5, **durability,
            **kafka_python_security(settings)}


def make_producer(settings: Settings) -> KafkaProducer:
    """A kafka-python producer for the service's topics, durable as the broker allows (module doc).
    Raises kafka.errors.NoBrokersAvailable when no broker answers."""
    return KafkaProducer(**producer_config(settings))


def log_consumer(settings: Settings) -> KafkaConsumer:
    """A group-less kafka-python consumer for reading topics by offset (:func:`iter_chunks`)."""
    return KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, group_id=None,
                         consumer_timeout_ms=1000, **kafka_python_security(settings))


def tail_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A group-less aiokafka consumer (not started) for following a topic, e.g. models.updates, from
    wherever the caller seeks; its fetch long-poll is bounded like the stream worker's."""
    return AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None, enable_auto_commit=False,
                            fetch_max_wait_ms=settings.fetch_max_wait_ms, **aiokafka_security(settings))


def async_producer(settings: Settings) -> AIOKafkaProducer:
    """An aiokafka producer (not started) for records a loss of a few is better than a wait for: the
    impressions the API publishes (acks=1). Nobody waits for them, so they are batched for 500 ms: one stored
    batch per partition every half second, not one per answer (issue #28: 3 records per object at 20 QPS)."""
    return AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks=1, linger_ms=500, **aiokafka_security(settings))


def admin_client(settings: Settings, client_id: str) -> KafkaAdminClient:
    """A kafka-python admin client of the broker. Raises kafka.errors.NoBrokersAvailable when none answers."""
    return KafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id=client_id, **kafka_python_security(settings))


def swap_control_topic(settings: Settings) -> str:
    """The swap control topic of the stream workers' consumer group (``settings.app_id``): the swap journal
    and the workers' users-done records (streams/journal.py), shared by every worker of the group."""
    return f"{settings.app_id}-swap-control"


def ensure_topics(settings: Settings) -> None:
    """Create the service's topics (the user control and impressions topics co-partitioned with the behavior
    topics), their dead-letter topics, models.updates and the swap control topic if missing (catalog,
    models.updates and swap control compacted). Raises kafka.errors.KafkaError when no broker answers."""
    topics = settings.topics
    wanted = [NewTopic(topics.catalog, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"})]
    wanted += [NewTopic(t, settings.partitions, 1) for t in topics.user_keyed]
    wanted += [NewTopic(topics.dead_letter(t), 1, 1) for t in (topics.catalog, *topics.user_keyed)]
    wanted += [NewTopic(topics.impressions, settings.partitions, 1)]
    # one partition: every reader sees one order; keyed by version, so compaction keeps each version's last word
    wanted += [NewTopic(topics.models_updates, 1, 1, topic_configs={"cleanup.policy": "compact"})]
    # one partition: the journal's records are read in the order the leaders wrote them
    wanted += [NewTopic(swap_control_topic(settings), 1, 1, topic_configs={"cleanup.policy": "compact"})]
    admin = admin_client(settings, "cartwise-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def consumer_lag(settings: Settings, topics: list[str], timeout_s: float = 5.0) -> dict[str, int]:
    """topic -> consumer lag of the stream worker's group (``settings.app_id``): records between the
    group's committed offset (0 where it has none) and the partition's high watermark, summed over
    partitions; 0 when caught up. Blocking (a few broker round trips and one fetch per partition).

    Raises kafka.errors.KafkaError when no broker answers, TimeoutError when it does not answer in time."""
    committed = committed_offsets(settings)
    consumer = log_consumer(settings)
    try:
        partitions = [tp for topic in topics for tp in partitions_of(consumer, topic)]
        ends = fetched_highwaters(consumer, {tp: committed.get(tp, 0) for tp in partitions}, timeout_s)
    finally:
        consumer.close()
    lag = dict.fromkeys(topics, 0)
    for tp in partitions:
        lag[tp.topic] += max(0, ends[tp] - committed.get(tp, 0))
    return lag


def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The committed offsets of the stream worker's group (``settings.app_id``), partitions without one left
    out. A connection dropped mid-request is tried once more on a new one: right after a restart the
    embedded broker has closed a client's connection in the middle of this request (seen in a fresh-clone CI
    run), and the next connection was answered. Raises kafka.errors.KafkaError."""
    for attempt in range(2):
        admin = admin_client(settings, "cartwise-status")
        try:
            offsets = admin.list_group_offsets(settings.app_id)[settings.app_id]
            return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        except KafkaConnectionError:
            if attempt:
                raise
            log.warning("the broker dropped the connection of a group-offsets request; asking again")
        finally:
            admin.close()


def fetched_highwaters(consumer: KafkaConsumer, starts: dict[TopicPartition, int],
                       timeout_s: float) -> dict[TopicPartition, int]:
    """Each partition's high watermark as a fetch from ``starts`` reports it (the embedded Tansu broker
    lists only the last batch's base offset as a partition's end; a fetch reports the true one). Assigns
    ``consumer`` to the partitions. Raises TimeoutError when some partition gets no fetch response in time."""
    consumer.assign(list(starts))
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout_s
    while any(consumer.highwater(tp) is None for tp in starts):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no fetch response for some of {len(starts)} partitions in {timeout_s} s")
        consumer.poll(timeout_ms=500, max_records=10_000)  # drained fast: a buffered fetch is parsed lazily
    return {tp: consumer.highwater(tp) for tp in starts}


def partitions_of(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, sorted (empty for an unknown topic)."""
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


def iter_chunks(consumer: KafkaConsumer, topic: str, starts: dict[int, int] | None = None,
                max_records: int = 500, only: set[int] | None = None
                ) -> Iterator[tuple[list[ConsumerRecord], dict[int, int]]]:
    """Records of ``topic`` (of its partitions in ``only``; None: all) from ``starts`` (partition -> offset;
    missing: 0) to the end as of the call, in chunks of at most ``max_records``, each with the next offset
    per partition after it.

    The end is each partition's high watermark as the fetch responses report it. The embedded Tansu broker
    lists the last batch's base offset as the end (a stale one on its disk store), so the listed end would
    drop the last batch; and a fetch from its disk store can come back empty before the end (when listing
    the stored batches outlasts the fetch wait), so an empty poll is no end either, unless no record has
    come for END_GAP_S (a gap at the end, module doc).

    Each record comes once: a fetch that raced a merge of the embedded broker's log maintenance carries the
    merged batch and then its other sources (cartwise/app/log_maintenance.py), and kafka-python, unlike
    aiokafka, passes on records below the position it has reached."""
    partitions = [tp for tp in partitions_of(consumer, topic) if only is None or tp.partition in only]
    if not partitions:
        return
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, (starts or {}).get(tp.partition, 0))
    progress = {tp: (consumer.position(tp), time.monotonic()) for tp in partitions}
    expected = {tp: consumer.position(tp) for tp in partitions}  # the next offset each partition may yield
    while not all(_at_end(consumer, tp, progress) for tp in partitions):
        batches = consumer.poll(timeout_ms=500, max_records=max_records)
        chunk = [r for tp, batch in batches.items() for r in _once(batch, expected, tp)]
        if chunk:
            yield chunk, {tp.partition: consumer.position(tp) for tp in partitions}


def _once(records: list[ConsumerRecord], expected: dict[TopicPartition, int], tp: TopicPartition
          ) -> Iterator[ConsumerRecord]:
    """``records`` of ``tp`` (offset order) at or above ``expected[tp]``, which advances past each."""
    for record in records:
        if record.offset >= expected[tp]:
            expected[tp] = record.offset + 1
            yield record


def _at_end(consumer: KafkaConsumer, tp: TopicPartition, progress: dict[TopicPartition, tuple[int, float]]) -> bool:
    """Whether ``tp`` is read to its high watermark, or to a gap at its end (module doc); ``progress``
    holds each partition's last position and when it was reached."""
    highwater, position = consumer.highwater(tp), consumer.position(tp)  # None before a fetch response
    if highwater is None or position >= highwater:
        return highwater is not None
    if position != progress[tp][0]:
        progress[tp] = (position, time.monotonic())
    elif time.monotonic() - progress[tp][1] > END_GAP_S:
        log.warning("%s[%d]: no records from %d below the high watermark %d for %.0f s: taken as a gap left by "
                    "an unacknowledged write", tp.topic, tp.partition, position, highwater, END_GAP_S)
        return True
    return False


def read_topic(consumer: KafkaConsumer, topic: str, starts: dict[int, int] | None = None
               ) -> tuple[list[ConsumerRecord], dict[int, int]]:
    """Every record of ``topic`` from ``starts`` to the current end, and the next offset per partition."""
    records = [r for chunk, _ in iter_chunks(consumer, topic, starts) for r in chunk]
    # the partitions iter_chunks assigned: a topic created meanwhile may list partitions it never read
    return records, {tp.partition: consumer.position(tp) for tp in consumer.assignment() if tp.topic == topic}
