"""The search playground: a page at ``/`` on ``CARTWISE_PLAYGROUND_PORT`` where a person runs a query, picks a
user, reads every hit's lexical, semantic and personal scores, compares BM25 with Cartwise side by side, and
sends a cart or purchase event to watch the ranking change (issue #15).

Every search goes through this process's own gRPC API over loopback, so the page sees exactly what a client
sees: the same validation (INVALID_ARGUMENT naming the field becomes HTTP 400 with that message), admission,
model snapshot and metrics. The page speaks the proto3 JSON mapping of ``cartwise.v1`` (protobuf's
``json_format``), so no request or response field is mapped by hand here.

Events the page sends are real Kafka events on the behavior topics, marked ``origin: "playground"``: the
stream worker applies them like any other, the trainer leaves them out (trainer/incremental.py).

With ``CARTWISE_API_TOKENS`` set, every ``/api`` call needs ``Authorization: Bearer <token>`` (HTTP 401
otherwise); the token is passed on to the gRPC API, which checks it like any call's. The page itself holds
no data and is served to anyone who reaches the port, which is loopback unless configured: a non-loopback
``CARTWISE_PLAYGROUND_HOST`` needs tokens (or ``CARTWISE_API_ALLOW_UNAUTHENTICATED``), as the gRPC API does."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime, timezone
from importlib import resources
from typing import Awaitable, Callable

import grpc
from aiohttp import web
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from pydantic import ValidationError

from cartwise.app.replay import publish
from cartwise.client import channel_credentials
from cartwise.credentials import SecurityConfigError
from cartwise.datasets import Record
from cartwise.events import BehaviorEvent, validation_reason
from cartwise.kafka_io import make_producer
from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc
from grpc_api.security import BearerTokenAuth, is_loopback

log = logging.getLogger(__name__)

STATIC = resources.files("cartwise.app") / "static"
EVENT_TOPICS = {"cart": "carts", "purchase": "purchases"}  # what the page's buttons send -> Topics field
WATCH_POLL_S = 0.02
WATCH_TIMEOUT_S = 5.0
SEARCH_TIMEOUT_S = 5.0
# gRPC status -> HTTP status of the page's API
HTTP_OF_GRPC = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
                grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
                grpc.StatusCode.DEADLINE_EXCEEDED: 504}


def check_binding(settings: Settings) -> None:
    """Raise SecurityConfigError when the playground would serve beyond loopback without tokens."""
    if not (is_loopback(settings.playground_host) or settings.api_tokens or settings.api_allow_unauthenticated):
        raise SecurityConfigError(
            f"refusing to serve the playground on {settings.playground_host} without authentication: set "
            "CARTWISE_API_TOKENS, bind CARTWISE_PLAYGROUND_HOST=127.0.0.1, or set CARTWISE_API_ALLOW_UNAUTHENTICATED=true")


class ApiError(Exception):
    """An answer of the page's API that is an error: HTTP ``status`` and a ``message`` naming the cause."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> web.Response:
        """The JSON error response ``{"error": message}``."""
        return web.json_response({"error": self.message}, status=self.status)


def _response_dict(response: pb.SearchResponse) -> dict:
    return MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


class Playground:
    """The playground's HTTP server (aiohttp) in front of the gRPC API at ``grpc_target``. ``await users(limit)``
    returns ids of users with a history, for the user picker; ``stream_time()`` the worker's stream time (s
    since the epoch; 0 without a worker in the process), which stamps the events when it is behind the
    wall clock: after a replay of 2019 events, an event stamped now would move stream time on by years
    and expire every user (streams/erasure.py). ``await start()`` binds
    ``settings.playground_host:playground_port`` (0 picks a free port; read ``.port``), ``await stop()``.
    Raises SecurityConfigError (:func:`check_binding`) and OSError when the address cannot be bound."""

    def __init__(self, settings: Settings, grpc_target: str, users: Callable[[int], Awaitable[list[str]]],
                 stream_time: Callable[[], float] = lambda: 0.0) -> None:
        check_binding(settings)
        self.settings, self.grpc_target, self._users, self._stream_time = settings, grpc_target, users, stream_time
        self._auth = BearerTokenAuth(settings.api_tokens) if settings.api_tokens else None
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.SearchServiceStub | None = None
        self._producer = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        """The aiohttp application: the page, its static files and the JSON API."""
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get("/", self._index)
        app.router.add_static("/static", STATIC)
        app.router.add_get("/api/info", self._info)
        app.router.add_post("/api/search", self._search)
        app.router.add_post("/api/events", self._event)
        return app

    async def start(self) -> None:
        credentials = channel_credentials(self.settings)
        self._channel = (grpc.aio.secure_channel(self.grpc_target, credentials) if credentials
                         else grpc.aio.insecure_channel(self.grpc_target))
        self._stub = pb_grpc.SearchServiceStub(self._channel)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.playground_host, self.settings.playground_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("playground on http://%s:%d/", self.settings.playground_host, self.port)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self._channel:
            await self._channel.close()
        if self._producer:
            await asyncio.to_thread(self._producer.close)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler):
        """Check the bearer token of ``/api`` calls (when tokens are set); answer an ApiError as JSON."""
        try:
            if self._auth is not None and request.path.startswith("/api/"):
                header = request.headers.get("Authorization")
                problem = self._auth.problem([("authorization", header)] if header is not None else [])
                if problem is not None:
                    raise ApiError(401, problem)
            return await handler(request)
        except ApiError as err:
            return err.response()

    def _metadata(self, request: web.Request) -> tuple[tuple[str, str], ...]:
        header = request.headers.get("Authorization")
        return (("authorization", header),) if header else ()

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=(STATIC / "playground.html").read_text(), content_type="text/html")

    async def _info(self, request: web.Request) -> web.Response:
        users = await self._users(50)
        return web.json_response({"users": users, "auth": self._auth is not None})

    async def _search(self, request: web.Request) -> web.Response:
        search = _parse(await _body(request), pb.SearchRequest)
        response = await self._call(search, self._metadata(request))
        return web.json_response(_response_dict(response))

    async def _call(self, search: pb.SearchRequest, metadata) -> pb.SearchResponse:
        """Search through the gRPC API. Raises ApiError with the HTTP status of :data:`HTTP_OF_GRPC` (502
        otherwise) and the gRPC status and details."""
        try:
            return await self._stub.Search(search, timeout=SEARCH_TIMEOUT_S, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            raise ApiError(HTTP_OF_GRPC.get(err.code(), 502), f"{err.code().name}: {err.details()}") from None

    async def _event(self, request: web.Request) -> web.Response:
        """Send a cart or purchase event and wait until the watched Search reflects it.

        Body: ``event_type`` ("cart" or "purchase"), ``user_id``, ``product_id``, ``query`` (optional), and
        ``watch``, the SearchRequest (proto3 JSON) whose answer should change. Answers ``elapsed_ms`` (from
        sending the event to the first answer that counts it among the user's interactions), ``visible``
        (false when that took longer than 5 s) and that answer ``response``."""
        body = await _body(request)
        event = _behavior_event(body, self._event_time())
        watch = _parse(body.get("watch") or {"query": event.query or ""}, pb.SearchRequest)
        watch.user_id = event.user_id
        metadata = self._metadata(request)
        before = await self._call(watch, metadata)
        started = time.perf_counter()
        await asyncio.to_thread(self._send, event)
        response, visible = await self._watch(watch, metadata, before.user_interactions)
        return web.json_response({"elapsed_ms": (time.perf_counter() - started) * 1000.0, "visible": visible,
                                  "event_id": event.event_id, "response": _response_dict(response)})

    def _event_time(self) -> datetime:
        """Stream time when it is behind the wall clock (class doc), else now."""
        now, stream = time.time(), self._stream_time()
        return datetime.fromtimestamp(stream if 0 < stream < now else now, timezone.utc)

    def _send(self, event: BehaviorEvent) -> None:
        if self._producer is None:
            self._producer = make_producer(self.settings)
        publish(self._producer, self.settings.topics, Record(EVENT_TOPICS[event.event_type], event.user_id, event))
        self._producer.flush()

    async def _watch(self, watch: pb.SearchRequest, metadata, interactions: int) -> tuple[pb.SearchResponse, bool]:
        """Poll ``watch`` until its user has more than ``interactions`` interactions (or 5 s pass)."""
        deadline = time.monotonic() + WATCH_TIMEOUT_S
        while True:
            response = await self._call(watch, metadata)
            if response.user_interactions > interactions:
                return response, True
            if time.monotonic() > deadline:
                return response, False
            await asyncio.sleep(WATCH_POLL_S)


async def _body(request: web.Request) -> dict:
    """The request's JSON object. Raises ApiError 400 when the body is not one."""
    try:
        body = await request.json()
    except ValueError as err:
        raise ApiError(400, f"body: not JSON ({err})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body: expected a JSON object")
    return body


def _parse(fields: dict, message_type):
    """``fields`` (proto3 JSON) as a ``message_type``. Raises ApiError 400 naming the bad field."""
    try:
        return ParseDict(fields, message_type())
    except ParseError as err:
        raise ApiError(400, str(err)) from None


def _behavior_event(body: dict, event_time: datetime) -> BehaviorEvent:
    """The playground event the body asks for, at ``event_time``. Raises ApiError 400 naming the bad field."""
    event_type = body.get("event_type")
    if event_type not in EVENT_TOPICS:
        raise ApiError(400, f"event_type: {event_type!r} is not one of {sorted(EVENT_TOPICS)}")
    try:
        return BehaviorEvent(event_id=f"playground-{uuid.uuid4()}", event_time=event_time,
                             event_type=event_type, user_id=body.get("user_id") or "",
                             product_id=body.get("product_id") or "", query=body.get("query") or None,
                             request_id=body.get("request_id") or None, origin="playground")
    except ValidationError as err:
        raise ApiError(400, validation_reason(err)) from None
