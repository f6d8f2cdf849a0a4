"""Every override of, and every reach into, faust-streaming's and aiokafka's private API, in one place.

Written against faust-streaming 0.15.3 and aiokafka 0.14.0 (constraints.txt); tests/unit/test_faust_hooks.py
has one test per hook below that fails when the installed faust or aiokafka no longer behaves as the hook
assumes (the private method or attribute is gone, its signature changed, or the override no longer takes
effect). Each hook, what it overrides and what it assumes:

1. ``AIOKafkaConsumerThread._create_worker_consumer(transport)``: returns the group's ``AIOKafkaConsumer``
   unstarted; the override sets its private ``_fetch_max_wait_ms``, which ``AIOKafkaConsumer.start()``
   hands to its Fetcher (below: the fetch long-poll bound).
2. ``Consumer._new_consumer_thread()``: the only place faust builds its consumer thread.
3. ``Consumer._thread``, with the thread's ``_consumer`` (the ``AIOKafkaConsumer``) and ``thread_loop``: the
   aiokafka consumer whose fetching :func:`_set_fetching` pauses and resumes, on the loop it runs on.
4. ``Consumer._paused_partitions``: the TPs faust paused (updated by ``pause_partitions`` /
   ``resume_partitions``), read by the ``perform_seek`` and ``verify_event_path`` overrides.
5. ``Consumer._new_offset(tp)`` over ``Consumer._acked`` (TP -> list of acked offsets): the offset faust may
   commit is the end of the first consecutive run of ``_acked[tp]``; an offset acked twice broke the run.
6. ``Producer._settings_extra()``: a mapping merged last into the ``AIOKafkaProducer`` keyword arguments.
7. ``Producer._ensure_producer()``: the started ``AIOKafkaProducer`` (its ``create_batch`` / ``send_batch``).
8. ``TableManager.on_start`` and its ``_update_channels()``: faust's ``on_start`` is a 1 s sleep, then
   ``_update_channels()`` and ``recovery.start()``; the override leaves out the sleep.
9. ``App._new_transport()``: builds ``app.transport`` (whose ``Consumer`` / ``Producer`` classes faust uses).
10. ``Table._serializer_from_type(typ)``: the key (and value) serializer of a Table by its declared type.
11. ``Table._new_store()``: builds the Table's store (``table.data``), once, when first needed.
12. ``Table._on_changelog_sent(fut)``: the callback of each changelog record faust sends itself
    (``table[key] = value``), with ``fut.result()`` the broker's RecordMetadata and ``fut.message`` the record.
13. ``App._consumer``: the consumer if one was built (the ``consumer`` property would build one).
14. ``Store._decode_key(raw)`` / ``Store._decode_value(raw)``: a record's key and value decoded as the
    Table's serializers say.
15. ``memory.Store._key_partition`` (key -> changelog partition): what faust's memory store drops a
    partition's keys by when the partition is revoked or a standby's recovery completes.

What the transport's hooks are for. faust hard-codes ``fetch_max_wait_ms=1500``. Apache Kafka answers a
fetch as soon as data arrives; the embedded Tansu broker (0.6.0, tansu-storage/src/service/fetch.rs) reads
its store once and then sleeps, data or not: the rest of the wait when under 250 ms, half of it otherwise.
So a record waits out most of the bound before it is delivered, which with faust's bound would add over a
second to freshness. Bounding the wait (``Settings.fetch_max_wait_ms``) costs one extra fetch per interval
on an idle partition. On the disk store each read of a partition with new data lists the partition's
batch objects, which the log maintenance keeps few (cartwise/app/log_maintenance.py); there the default
is 100 ms (issue #28: p99 freshness 365 ms at 1,000 events/s, 4.7 s with the 1 s it was while the store
grew without bound).

faust pauses partitions only in its own bookkeeping, so during a Table's recovery at start the aiokafka
consumer still prefetches the stream partitions, and faust resumes them just before it seeks them back to
their committed offsets: records from before and after the seek interleave, faust takes the jump for a
gap in the log and commits past events it never delivered (events lost after a kill -9, found by
``cartwise bench recovery``; faust-streaming issue #216 is the same race). Here a faust pause also pauses
aiokafka's fetching, stream partitions resume fetching only after the seek, and offsets acknowledged
twice count once when faust looks for the consecutive run it may commit. faust's livelock check, which
expects a recent fetch for every assigned partition, leaves the paused ones out.

faust enables producer idempotence only inside transactions (exactly-once); against a configured
broker the worker wants it for every send (changelog, dead letters) so a retried send is written once
(cartwise/kafka_io.py says when).

faust's Table manager sleeps a second before it registers the Tables, and the consumer joins the group only
after that; every Table of streams/app.py exists before the app starts, so :class:`TableManager` does not
sleep (a second off every start)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterable

import faust
from aiokafka import TopicPartition
from faust.stores import memory
from faust.tables import manager
from faust.transport.drivers import aiokafka as driver

# on_sent(partition, records, offset of the last): records a broker acknowledged (streams/table_store.py)
Acknowledged = Callable[[int, list[tuple[bytes, bytes | None]], int], None]


def _transport_class(fetch_max_wait_ms: int, idempotent_producer: bool) -> type[driver.Transport]:
    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start()
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self):
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        def pause_partitions(self, tps: Iterable) -> None:
            tps = list(tps)
            super().pause_partitions(tps)
            _set_fetching(self._thread, tps, paused=True)

        def resume_partitions(self, tps: Iterable) -> None:
            tps = list(tps)
            super().resume_partitions(tps)
            # stream partitions resume in perform_seek, once sought back to their committed offsets
            changelogs = self.app.tables.changelog_topics
            _set_fetching(self._thread, [tp for tp in tps if tp.topic in changelogs], paused=False)

        async def perform_seek(self) -> None:
            await super().perform_seek()
            _set_fetching(self._thread, [tp for tp in self.assignment() if tp not in self._paused_partitions],
                          paused=False)

        def verify_event_path(self, now: float, tp) -> None:
            # faust's livelock check expects a recent fetch for every assigned partition; a partition
            # paused here fetches nothing by design (an active Table's changelog after recovery), which
            # faust logged every 7 s as "Aiokafka has not sent fetch request" once 5 minutes had passed
            if tp not in self._paused_partitions:
                super().verify_event_path(now, tp)

        def _new_offset(self, tp):
            self._acked[tp][:] = sorted(set(self._acked[tp]))
            return super()._new_offset(tp)

    class Producer(driver.Producer):
        _batch_sends: asyncio.Future | None = None  # the newest send_batches_soon; each waits for the one before

        def send_batches_soon(self, topic: str, records: dict[int, list[tuple[bytes, bytes | None]]],
                              on_sent: Acknowledged) -> None:
            """Send ``records`` (partition -> (key, value) in order) to ``topic`` as aiokafka record batches, in
            a task after the ones queued before it, calling ``on_sent(partition, records, offset of the last)``
            as the broker acknowledges each batch; ``flush`` (which faust runs before every offset commit)
            and ``stop`` wait for it and raise its error."""
            self._batch_sends = asyncio.ensure_future(_send_batches(self, topic, records, on_sent, self._batch_sends))

        async def flush(self) -> None:
            if self._batch_sends is not None:
                await self._batch_sends
            await super().flush()

        async def on_stop(self) -> None:
            if self._batch_sends is not None:
                await asyncio.gather(self._batch_sends, return_exceptions=True)
            await super().on_stop()

        def _settings_extra(self):
            extra = dict(super()._settings_extra())
            return {**extra, "acks": "all", "enable_idempotence": True} if idempotent_producer else extra

    class Transport(driver.Transport):
        pass

    Transport.Consumer = Consumer
    Transport.Producer = Producer
    return Transport


async def _send_batches(producer: driver.Producer, topic: str, records: dict[int, list[tuple[bytes, bytes | None]]],
                        on_sent: Acknowledged, previous: asyncio.Future | None) -> None:
    """The body of ``send_batches_soon``: after ``previous`` (so two batches of one partition keep their order),
    each partition's records in as few aiokafka record batches as fit."""
    if previous is not None:
        await asyncio.gather(previous, return_exceptions=True)  # its error was raised to whoever flushed first
    kafka = producer._ensure_producer()  # faust's driver has no batch send of its own

    async def send(batch, partition: int, sent: list) -> None:
        def done(future: asyncio.Future) -> None:
            if not future.cancelled() and future.exception() is None:  # a failure is raised by flush
                on_sent(partition, sent, future.result().offset + len(sent) - 1)  # metadata: the base offset

        (await kafka.send_batch(batch, topic, partition=partition)).add_done_callback(done)

    for partition, items in records.items():
        batch, sent = kafka.create_batch(), []
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                await send(batch, partition, sent)
                batch, sent = kafka.create_batch(), []
                batch.append(key=key, value=value, timestamp=None)
            sent.append((key, value))
        await send(batch, partition, sent)


def _set_fetching(thread: driver.AIOKafkaConsumerThread, tps: list, paused: bool) -> None:
    """Pause or resume aiokafka's fetching of the assigned ``tps``, on the consumer thread's loop (aiokafka's
    partition state is not thread-safe)."""
    consumer, loop = getattr(thread, "_consumer", None), getattr(thread, "thread_loop", None)
    if consumer is None or loop is None:
        return
    partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]

    def apply() -> None:
        assigned = consumer.assignment()
        chosen = [tp for tp in partitions if tp in assigned]
        (consumer.pause if paused else consumer.resume)(*chosen)

    loop.call_soon_threadsafe(apply)


class TableManager(manager.TableManager):
    """faust's Table manager without the second it sleeps before it registers the Tables (which the consumer
    waits for before it joins the group): every Table of streams/app.py is declared before the app starts, so
    the sleep only delayed every start."""

    async def on_start(self) -> None:
        await self._update_channels()
        await self.recovery.start()


class FastPollApp(faust.App):
    """faust.App with ``fetch_max_wait_ms`` (ms) bounding the consumer's fetch long-poll, an idempotent
    producer (acks=all) when ``idempotent_producer``, and :class:`TableManager`."""

    def __init__(self, *args, fetch_max_wait_ms: int = 50, idempotent_producer: bool = False, **kwargs) -> None:
        self._fetch_max_wait_ms, self._idempotent_producer = fetch_max_wait_ms, idempotent_producer
        super().__init__(*args, TableManager=TableManager, **kwargs)

    def _new_transport(self):
        return _transport_class(self._fetch_max_wait_ms, self._idempotent_producer)(self.conf.broker_consumer, self)


class RawKeyTable(faust.Table):
    """A faust Table whose str keys are written as their UTF-8 bytes, as the source topics' keys are: the
    producer's partitioner then puts a key's changelog record in the partition of its source events, the
    changelog partition faust restores to the worker that owns them. faust's own choice for str keys is
    JSON (``"123"``, quotes included), which hashes to another partition.

    ``store(table)`` builds its store (streams/table_store.py's), which must have ``acknowledged(partition,
    records, offset)``: changelog records faust itself sends (``table[key] = value``) reach it once
    acknowledged."""

    def __init__(self, *args, store: Callable[[faust.Table], Any], **kwargs) -> None:
        self._store_factory = store
        super().__init__(*args, **kwargs)

    def _serializer_from_type(self, typ):
        return "raw" if typ is str else super()._serializer_from_type(typ)

    def _new_store(self):
        return self._store_factory(self)

    def _on_changelog_sent(self, fut) -> None:
        sent = fut.result()
        self.data.acknowledged(sent.partition, [(fut.message.key, fut.message.value)], sent.offset)


class MemoryStore(memory.Store):
    """faust's in-memory Table store with its private decoding and key placement made public (hooks 14, 15)."""

    def decode_key(self, raw: bytes | None):
        """``raw`` (a changelog record's key) decoded as the Table's key serializer says."""
        return self._decode_key(raw)

    def decode_value(self, raw: bytes | None):
        """``raw`` (a changelog record's value) decoded as the Table's value serializer says."""
        return self._decode_value(raw)

    @property
    def key_partitions(self) -> dict:
        """key -> its changelog partition, which faust keeps for each key it restored; the caller keeps it so
        for the keys it puts into the store itself."""
        return self._key_partition


def assigned_partitions(app: faust.App) -> set:
    """The topic partitions assigned to ``app``'s consumer; none before the consumer has joined the group,
    and no consumer is built to find out (hook 13)."""
    consumer = app._consumer
    return set(consumer.assignment()) if consumer is not None and consumer.started else set()
