"""Producer durability follows the broker: acks=all and idempotence on a configured one, the embedded
broker's limits only when Cartwise runs that broker itself. A read to the end stops at a gap at the end of
a partition (fake consumer: the gap needs a kill -9 mid-produce to arise on the real broker)."""

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from cartwise import kafka_io
from cartwise.kafka_io import idempotent, iter_chunks, producer_config
from cartwise.settings import Settings


def test_a_configured_broker_gets_acks_all_and_idempotence():
    settings = Settings(kafka_bootstrap="kafka-1:9092,kafka-2:9092")
    config = producer_config(settings)
    assert settings.bootstrap == "kafka-1:9092,kafka-2:9092" and not settings.embedded_broker
    assert config["acks"] == "all" and config["enable_idempotence"] is True and idempotent(settings)


def test_the_embedded_broker_gets_its_limits_and_its_own_port():
    settings = Settings(embedded_kafka_port=29092)
    config = producer_config(settings)
    assert settings.embedded_broker and settings.bootstrap == config["bootstrap_servers"] == "127.0.0.1:29092"
    assert config["acks"] == 1 and config["enable_idempotence"] is False and not idempotent(settings)
    assert config["max_in_flight_requests_per_connection"] == 1


def test_idempotence_can_be_turned_off_for_a_configured_broker_without_it():
    config = producer_config(Settings(kafka_bootstrap="127.0.0.1:9092", kafka_idempotence=False))
    assert config["acks"] == "all" and config["enable_idempotence"] is False


class GapConsumer:
    """One partition holding offsets 0..2, then a gap up to a high watermark of 5; every poll returns what
    lies between the position and the gap."""

    def __init__(self) -> None:
        self.tp, self._position = TopicPartition("t", 0), 0

    def partitions_for_topic(self, topic):
        return {0}

    def assign(self, partitions):
        pass

    def seek(self, tp, offset):
        self._position = offset

    def position(self, tp):
        return self._position

    def highwater(self, tp):
        return 5

    def poll(self, timeout_ms, max_records):
        records = [ConsumerRecord("t", 0, 0, o, 0, 0, b"k", b"v", [], None, 1, 1, 0) for o in range(self._position, 3)]
        self._position = max(self._position, 3)
        return {self.tp: records} if records else {}


def test_a_read_to_the_end_stops_at_a_gap_at_the_end_of_the_log(monkeypatch):
    monkeypatch.setattr(kafka_io, "END_GAP_S", 0.05)
    chunks = list(iter_chunks(GapConsumer(), "t"))
    assert [r.offset for chunk, _ in chunks for r in chunk] == [0, 1, 2] and chunks[-1][1] == {0: 3}


class MergeRaceConsumer(GapConsumer):
    """A fetch that raced a merge: the merged batch (offsets 0..2), then a source of it (1..2) again."""

    def poll(self, timeout_ms, max_records):
        if self._position >= 3:
            return {}
        self._position = 3
        return {self.tp: [ConsumerRecord("t", 0, 0, o, 0, 0, b"k", b"v", [], None, 1, 1, 0) for o in (0, 1, 2, 1, 2)]}

    def highwater(self, tp):
        return 3


def test_a_read_to_the_end_yields_each_record_once_when_a_fetch_repeats_records_it_passed():
    chunks = list(iter_chunks(MergeRaceConsumer(), "t"))
    assert [r.offset for chunk, _ in chunks for r in chunk] == [0, 1, 2]
