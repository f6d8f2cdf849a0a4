"""A faust App whose Kafka consumer polls with a short fetch long-poll bound and whose producer can be
idempotent.

faust hard-codes ``fetch_max_wait_ms=1500``. Apache Kafka answers a fetch as soon as data arrives,
but the embedded Tansu broker answers only when the wait expires, which alone would add up to 1.5 s
to freshness. Bounding the wait costs one extra empty fetch per interval on an idle partition.

faust enables producer idempotence only inside transactions (exactly-once); against a configured
broker the worker wants it for every send (changelog, dead letters) so a retried send is written once
(cartwise/kafka_io.py says when)."""

from __future__ import annotations

import faust
from faust.transport.drivers import aiokafka as driver


def _transport_class(fetch_max_wait_ms: int, idempotent_producer: bool) -> type[driver.Transport]:
    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start()
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self):
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Producer(driver.Producer):
        def _settings_extra(self):
            extra = dict(super()._settings_extra())
            return {**extra, "acks": "all", "enable_idempotence": True} if idempotent_producer else extra

    class Transport(driver.Transport):
        pass

    Transport.Consumer = Consumer
    Transport.Producer = Producer
    return Transport


class FastPollApp(faust.App):
    """faust.App with ``fetch_max_wait_ms`` (ms) bounding the consumer's fetch long-poll, and an
    idempotent producer (acks=all) when ``idempotent_producer``."""

    def __init__(self, *args, fetch_max_wait_ms: int = 50, idempotent_producer: bool = False, **kwargs) -> None:
        self._fetch_max_wait_ms, self._idempotent_producer = fetch_max_wait_ms, idempotent_producer
        super().__init__(*args, **kwargs)

    def _new_transport(self):
        return _transport_class(self._fetch_max_wait_ms, self._idempotent_producer)(self.conf.broker_consumer, self)
