"""Publishing what each answer showed on the impressions topic (cartwise.events.Impression), off the
request's path: an answer is queued (a bounded buffer) and a background task sends it, so a slow or
absent broker costs dropped impressions, counted, never a slower or failed request."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from cartwise.events import Impression, encode_event
from cartwise.kafka_io import async_producer
from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from grpc_api.validation import SearchQuery, SimilarQuery

log = logging.getLogger(__name__)


class ImpressionLog:
    """``record(impression)`` queues one answer's impression (dropped when ``settings.impressions_buffer``
    are waiting); ``start()`` / ``stop()`` run the sender. Counters: ``published`` (acknowledged by the
    broker), ``dropped`` (buffer full or send failed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue: asyncio.Queue[Impression] = asyncio.Queue(settings.impressions_buffer)
        self.published = self.dropped = 0
        self._sender: asyncio.Task | None = None

    def record(self, impression: Impression) -> None:
        """Queue ``impression`` without waiting."""
        try:
            self.queue.put_nowait(impression)
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> None:
        self._sender = asyncio.create_task(self._send_all())

    async def stop(self) -> None:
        """Stop sending; what is still queued is dropped."""
        if self._sender:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)

    async def _send_all(self) -> None:
        producer = async_producer(self.settings)
        try:
            await producer.start()
        except Exception as err:  # KafkaError, OSError: searching goes on; impressions fill the buffer, dropped
            log.error("impressions not published: the broker at %s does not answer (%s)", self.settings.bootstrap, err)
            return
        try:
            while True:
                impression = await self.queue.get()
                delivery = await producer.send(self.settings.topics.impressions, encode_event(impression),
                                               key=impression.key.encode())
                delivery.add_done_callback(self._delivered)
        finally:
            await producer.stop()

    def _delivered(self, delivery: asyncio.Future) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            self.dropped += 1
        else:
            self.published += 1


def impression_of(request: SearchQuery | SimilarQuery, response: pb.SearchResponse) -> Impression:
    """The Impression of ``response`` (its ``request_id`` set), the answer to ``request``, answered now."""
    similar = isinstance(request, SimilarQuery)
    return Impression(event_id=response.request_id, event_time=datetime.now(timezone.utc),
                      user_id=request.user_id or None, query=None if similar else request.query or None,
                      similar_to=request.product_id if similar else None, strategy=response.strategy,
                      model_version=response.model_version, product_ids=[h.product_id for h in response.hits])
