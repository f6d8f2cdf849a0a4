"""streams/faust_hooks.py: one test per hook into faust-streaming's or aiokafka's private API (numbered as in
the module's docstring). Each fails when the installed faust or aiokafka no longer behaves as the hook
assumes: the private method or attribute is gone or its signature changed, or the override no longer
takes effect. No broker is needed: nothing here connects."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace

import aiokafka
import faust
import pytest
from aiokafka.consumer import consumer as aiokafka_consumer
from faust.exceptions import NotReady
from faust.stores import memory
from faust.tables import manager
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from streams.faust_hooks import FastPollApp, MemoryStore, RawKeyTable, TableManager, _set_fetching, \
    assigned_partitions

FETCH_MAX_WAIT_MS = 37
CHANGELOG = "hooks-histories-changelog"


def params(fn) -> list[str]:
    """The parameter names of ``fn`` (self included for a function of a class)."""
    return list(inspect.signature(fn).parameters)


def new_app(idempotent_producer: bool = False) -> FastPollApp:
    """An app over a broker nothing connects to (nothing here starts a client)."""
    return FastPollApp("hooks", broker="kafka://localhost:1", store="memory://", web_enabled=False,
                       fetch_max_wait_ms=FETCH_MAX_WAIT_MS, idempotent_producer=idempotent_producer)


def new_table(app: faust.App, store=None) -> RawKeyTable:
    return RawKeyTable(app, name="histories", default=None, partitions=1, use_partitioner=True, key_type=str,
                       store=store or (lambda t: MemoryStore("memory://", t.app, t, table_name=t.name,
                                                             key_type=t.key_type, key_serializer=t.key_serializer,
                                                             value_serializer=t.value_serializer,
                                                             value_type=t.value_type, loop=t.loop)))


class _Started(Exception):
    """Raised by a stand-in for aiokafka's Fetcher once it has its arguments."""


def test_1_the_worker_consumer_fetches_with_the_bound(monkeypatch):
    assert params(driver.AIOKafkaConsumerThread._create_worker_consumer) == ["self", "transport"]
    fetcher_kwargs = {}

    def fetcher(*args, **kwargs):
        fetcher_kwargs.update(kwargs)
        raise _Started

    async def start_consumer() -> None:
        app = new_app()
        kafka = app.consumer._thread._create_worker_consumer(app.transport)
        assert isinstance(kafka, aiokafka.AIOKafkaConsumer) and kafka._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
        monkeypatch.setattr(kafka._client, "bootstrap", _nothing)
        monkeypatch.setattr(kafka, "_wait_topics", _nothing)
        monkeypatch.setattr(aiokafka_consumer, "Fetcher", fetcher)
        with pytest.raises(_Started):
            await kafka.start()

    asyncio.run(start_consumer())
    assert fetcher_kwargs["fetch_max_wait_ms"] == FETCH_MAX_WAIT_MS  # what start() hands the fetcher


async def _nothing(*args, **kwargs) -> None:
    return None


def test_2_faust_builds_its_consumer_thread_with_the_override():
    assert params(driver.Consumer._new_consumer_thread) == ["self"]

    async def thread():
        return new_app().consumer._thread

    built = asyncio.run(thread())
    assert isinstance(built, driver.AIOKafkaConsumerThread) and type(built) is not driver.AIOKafkaConsumerThread
    assert type(built)._create_worker_consumer is not driver.AIOKafkaConsumerThread._create_worker_consumer


def test_3_the_consumer_thread_keeps_its_aiokafka_consumer_and_loop():
    # the thread's on_start builds the aiokafka consumer on the thread's loop, as ``_consumer``
    assert "self._consumer = self._create_consumer(loop=self.thread_loop)" in inspect.getsource(
        driver.AIOKafkaConsumerThread.on_start)

    async def thread():
        return new_app().consumer._thread

    built = asyncio.run(thread())
    assert built._consumer is None and hasattr(built, "thread_loop")

    # and _set_fetching pauses and resumes the assigned partitions of that consumer, on that loop
    calls = []
    kafka = SimpleNamespace(assignment=lambda: {aiokafka.TopicPartition("t", 0)},
                            pause=lambda *tps: calls.append(("pause", tps)),
                            resume=lambda *tps: calls.append(("resume", tps)))
    loop = asyncio.new_event_loop()
    try:
        _set_fetching(SimpleNamespace(_consumer=kafka, thread_loop=loop), [TP("t", 0), TP("t", 1)], paused=True)
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert calls == [("pause", (aiokafka.TopicPartition("t", 0),))]


def test_4_paused_partitions_follow_faust_pause_and_resume_and_skip_the_livelock_check():
    assert params(faust_consumer.Consumer.pause_partitions) == ["self", "tps"]
    assert params(faust_consumer.Consumer.resume_partitions) == ["self", "tps"]
    assert inspect.iscoroutinefunction(faust_consumer.Consumer.perform_seek)
    assert params(driver.Consumer.verify_event_path) == ["self", "now", "tp"]

    async def consumer():
        return new_app().consumer

    made = asyncio.run(consumer())
    paused, running = TP(CHANGELOG, 0), TP("behavior.carts", 0)
    made.pause_partitions([paused, running])
    assert made._paused_partitions == {paused, running}
    made.resume_partitions([running])
    assert made._paused_partitions == {paused}

    checked = []
    made._thread = SimpleNamespace(verify_event_path=lambda now, tp: checked.append(tp))
    for tp in (paused, running):
        made.verify_event_path(1.0, tp)
    assert checked == [running]


def test_5_an_offset_acked_twice_does_not_end_the_consecutive_run():
    assert params(faust_consumer.Consumer._new_offset) == ["self", "tp"]

    async def consumer():
        return new_app().consumer

    made, tp = asyncio.run(consumer()), TP("behavior.carts", 0)
    assert isinstance(made._acked[tp], list)
    made._committed_offset[tp] = 2
    made._acked[tp] = [3, 4, 4, 5]
    assert made._new_offset(tp) == 6
    made._acked[tp] = [3, 4, 4, 5]
    assert faust_consumer.Consumer._new_offset(made, tp) == 5  # faust's own stops at the repeat: the hook is needed


def test_6_the_producer_settings_extra_turn_idempotence_on():
    assert params(driver.Producer._settings_extra) == ["self"]

    async def producers():
        made = [new_app(idempotent).producer for idempotent in (True, False)]
        return made, [p._new_producer() for p in made]

    (idempotent, plain), (kafka_idempotent, kafka_plain) = asyncio.run(producers())
    assert idempotent._settings_extra() == {"acks": "all", "enable_idempotence": True}
    assert plain._settings_extra() == {}
    # faust merges the extra settings into aiokafka's: idempotence needs its transaction manager
    assert kafka_idempotent._txn_manager is not None and kafka_plain._txn_manager is None


def test_7_ensure_producer_gives_the_started_aiokafka_producer():
    assert params(driver.Producer._ensure_producer) == ["self"]
    assert params(aiokafka.AIOKafkaProducer.create_batch) == ["self"]
    assert params(aiokafka.AIOKafkaProducer.send_batch) == ["self", "batch", "topic", "partition"]

    async def producer():
        return new_app().producer

    made = asyncio.run(producer())
    with pytest.raises(NotReady):
        made._ensure_producer()
    kafka = object()
    made._producer = kafka
    assert made._ensure_producer() is kafka


def test_8_the_table_manager_registers_the_tables_without_sleeping(monkeypatch):
    assert inspect.iscoroutinefunction(manager.TableManager._update_channels)
    assert params(manager.TableManager._update_channels) == ["self"]
    calls = []

    async def record(name):
        calls.append(name)

    async def start(cls):
        tables = new_app().tables
        assert isinstance(tables, TableManager)
        monkeypatch.setattr(tables, "sleep", lambda s: record(f"sleep {s}"))
        monkeypatch.setattr(tables, "_update_channels", lambda: record("update"))
        monkeypatch.setattr(tables.recovery, "start", lambda: record("recovery"))
        await cls.on_start(tables)

    asyncio.run(start(manager.TableManager))
    assert calls == ["sleep 1.0", "update", "recovery"]  # faust's own: the override leaves out the sleep only
    calls.clear()
    asyncio.run(start(TableManager))
    assert calls == ["update", "recovery"]


def test_9_the_app_builds_its_transport_with_the_override():
    assert params(faust.App._new_transport) == ["self"]
    app = new_app()
    assert isinstance(app.transport, driver.Transport)
    assert app.transport.Consumer.verify_event_path is not driver.Consumer.verify_event_path
    assert app.transport.Producer._settings_extra is not driver.Producer._settings_extra


def test_10_str_keys_are_raw_bytes():
    assert params(faust.Table._serializer_from_type) == ["self", "typ"]
    app = new_app()
    table = new_table(app)
    assert table.key_serializer == "raw"
    assert table.changelog_topic.prepare_key("123", table.key_serializer)[0] == b"123"
    assert faust.Table(app, name="json", key_type=str).key_serializer == "json"  # faust's own choice


def test_11_the_table_store_is_built_by_the_factory():
    assert params(faust.Table._new_store) == ["self"]
    built = []

    def store(table):
        built.append(MemoryStore("memory://", table.app, table, table_name=table.name, key_type=table.key_type,
                                 key_serializer=table.key_serializer, value_serializer=table.value_serializer,
                                 value_type=table.value_type, loop=table.loop))
        return built[-1]

    table = new_table(new_app(), store)
    assert table.data is built[0] and table.data is built[0] and len(built) == 1


def test_12_faust_reports_each_changelog_record_it_sends_to_the_store():
    assert params(faust.Table._on_changelog_sent) == ["self", "fut"]
    assert {"partition", "offset"} <= set(aiokafka.structs.RecordMetadata._fields)
    acknowledged = []
    table = new_table(new_app())
    table.data.acknowledged = lambda *args: acknowledged.append(args)
    sent = {}
    topic = table.changelog_topic
    topic.send_soon = lambda **kwargs: sent.update(kwargs)
    table.send_changelog(0, "alice", {"n": 1})
    assert sent["callback"] == table._on_changelog_sent
    fut = SimpleNamespace(result=lambda: SimpleNamespace(partition=0, offset=7),
                          message=SimpleNamespace(key=b"alice", value=b'{"n": 1}'))
    sent["callback"](fut)
    assert acknowledged == [(0, [(b"alice", b'{"n": 1}')], 7)]


def test_13_the_assignment_is_read_without_building_a_consumer():
    app = new_app()
    assert app._consumer is None
    assert assigned_partitions(app) == set() and app._consumer is None

    async def consumer():
        return app.consumer

    made = asyncio.run(consumer())
    assert app._consumer is made and not made.started and assigned_partitions(app) == set()


def test_14_records_decode_as_the_table_serializers_say():
    assert params(faust.stores.base.Store._decode_key) == ["self", "key"]
    assert params(faust.stores.base.Store._decode_value) == ["self", "value"]
    store = new_table(new_app()).data
    assert store.decode_key(b"123") == "123"
    assert store.decode_value(b'{"n": 1}') == {"n": 1}


def test_15_faust_drops_keys_by_their_recorded_partition():
    store = new_table(new_app()).data
    assert isinstance(store, memory.Store) and isinstance(store._key_partition, dict)
    store.data.update(alice={"n": 1}, bob={"n": 2})
    store.key_partitions.update(alice=0, bob=1)
    asyncio.run(store.on_recovery_completed({TP(CHANGELOG, 0)}, set()))
    assert dict(store.data) == {"alice": {"n": 1}} and store.key_partitions == {"alice": 0}


def test_the_public_store_methods_the_mirror_overrides_keep_their_signatures():
    """Not private, but streams/table_store.py's LocalStore overrides them as faust calls them: a changed
    signature would make faust's call fail or pass something else."""
    assert params(memory.Store.on_rebalance) == ["self", "assigned", "revoked", "newly_assigned", "generation_id"]
    assert params(memory.Store.apply_changelog_batch) == ["self", "batch", "to_key", "to_value"]
    assert params(memory.Store.persisted_offset) == ["self", "tp"]
    assert "table.persisted_offset(tp)" in inspect.getsource(faust.tables.recovery.Recovery)
