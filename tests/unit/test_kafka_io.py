"""Producer durability follows the broker: acks=all and idempotence on a configured one, the embedded
broker's limits only when Cartwise runs that broker itself."""

from cartwise.kafka_io import idempotent, producer_config
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
