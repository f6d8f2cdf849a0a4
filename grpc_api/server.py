"""The grpc.aio server: SearchService, AdminService, the standard health service, and server reflection.

grpcio answers a request whose bytes do not decode as the method's message with INTERNAL; an interceptor
turns that into INVALID_ARGUMENT naming the message, like every other bad request, and the server carries on.

Authentication (grpc_api/security.py) runs before it: a caller without a valid token learns nothing about
its request, not even whether it decodes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cartwise.metrics import Metrics
from cartwise.v1 import admin_pb2, admin_pb2_grpc, search_pb2, search_pb2_grpc
from grpc_api.admin import AdminServicer
from grpc_api.request_metrics import RequestMetrics
from grpc_api.security import ServerSecurity
from grpc_api.servicer import SearchServicer

log = logging.getLogger(__name__)

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


@dataclass(frozen=True, slots=True)
class _Undecodable:
    reason: str


class DecodeErrorsAreInvalidArgument(grpc.aio.ServerInterceptor):
    """Unary methods get a request deserializer that never raises: bytes that do not decode reach the
    handler as a marker, answered INVALID_ARGUMENT "request: ..." before the servicer sees them."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        decode, behavior, method = handler.request_deserializer, handler.unary_unary, details.method

        def deserialize(data: bytes):
            try:
                return decode(data)
            except Exception as err:  # protobuf raises DecodeError, and other errors for some malformed input
                return _Undecodable(f"{type(err).__name__}: {err}")

        async def guarded(request, context):
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"request: not a valid message for {method} ({request.reason})")
            return await behavior(request, context)

        return handler._replace(request_deserializer=deserialize, unary_unary=guarded)


class ApiServer:
    """SearchService + AdminService + health + reflection on ``host:port``, with ``security``'s tokens and
    TLS (default: plaintext, no tokens). ``start()`` binds (``port`` 0 picks a free port, then read
    ``.port``), health reports SERVING; ``stop(grace_s)`` drains in-flight requests. Raises OSError when
    the address cannot be bound. With ``metrics`` (cartwise/metrics.py) Search/Recommend latency is observed
    (grpc_api/request_metrics.py)."""

    def __init__(self, servicer: SearchServicer, admin: AdminServicer, host: str, port: int,
                 security: ServerSecurity = ServerSecurity(), metrics: Metrics | None = None) -> None:
        # interceptors run in list order, the first outermost: authentication, the latency metric, decoding
        timing = [RequestMetrics(metrics.request_seconds)] if metrics else []
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)],
                                      interceptors=[*security.interceptors(), *timing, DecodeErrorsAreInvalidArgument()])
        search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, self.server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, ADMIN_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        address = f"{host}:{port}"
        self.port = (self.server.add_secure_port(address, security.credentials) if security.credentials
                     else self.server.add_insecure_port(address))
        if self.port == 0:
            raise OSError(f"cannot bind gRPC on {host}:{port}")
        log.info("gRPC API on %s:%d: %s", host, self.port, security.describe())

    async def start(self) -> None:
        """Start serving and mark SearchService and the server SERVING."""
        await self.server.start()
        for name in (SERVICE_NAME, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Report NOT_SERVING, then stop after ``grace_s`` seconds of draining."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
