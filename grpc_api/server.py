"""The grpc.aio server: SearchService, the standard health service, and server reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cartwise.v1 import search_pb2, search_pb2_grpc
from grpc_api.servicer import SearchServicer

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name


class ApiServer:
    """SearchService + health + reflection on ``host:port``. ``start()`` binds (``port`` 0 picks a free
    port, then read ``.port``), health reports SERVING; ``stop(grace_s)`` drains in-flight requests."""

    def __init__(self, servicer: SearchServicer, host: str, port: int) -> None:
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC on {host}:{port}")

    async def start(self) -> None:
        """Start serving and mark SearchService and the server SERVING."""
        await self.server.start()
        for name in (SERVICE_NAME, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Report NOT_SERVING, then stop after ``grace_s`` seconds of draining."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
