"""Liveness and readiness probes for container health checks (`cartwise health`): the standard gRPC health
service of an API process, or the metrics endpoint of a process without a gRPC port (worker, trainer)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cartwise.settings import Settings


class ProbeFailed(RuntimeError):
    """The probed process did not answer healthy; the message says what it answered or why it did not."""


async def _check_grpc(settings: Settings, target: str, service: str, timeout_s: float) -> None:
    from cartwise.client import open_channel  # the one place channels get TLS and tokens

    async with open_channel(settings, target) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise ProbeFailed(f"{target}: {err.code().name}: {err.details()}") from None
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise ProbeFailed(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}")


def check_grpc(settings: Settings, target: str, service: str = "", timeout_s: float = 3.0) -> None:
    """Ask ``target``'s grpc.health.v1 service about ``service`` ('' is the whole server) over the channel
    the settings describe (TLS, token: cartwise/client.py). Returns None when it answers SERVING;
    raises ProbeFailed otherwise (NOT_SERVING, an RPC error, a deadline), and SecurityConfigError for
    unusable client TLS settings."""
    asyncio.run(_check_grpc(settings, target, service, timeout_s))


def check_http(url: str, timeout_s: float = 3.0) -> None:
    """GET ``url``. Returns None on a 2xx answer; raises ProbeFailed on any other status or no answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (urllib.error.URLError, OSError) as err:
        raise ProbeFailed(f"{url}: {getattr(err, 'reason', err)}") from None
    if not 200 <= status < 300:
        raise ProbeFailed(f"{url}: HTTP {status}")
