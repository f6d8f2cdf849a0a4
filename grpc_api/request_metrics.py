"""The Search/Recommend latency metric: a grpc.aio server interceptor observing each SearchService call's
seconds into cartwise_request_seconds{method, status} (cartwise/metrics.py), status the gRPC code's name
(OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...). It runs after authentication (a request refused
UNAUTHENTICATED is not observed) and before decoding (an undecodable request counts INVALID_ARGUMENT)."""

from __future__ import annotations

import asyncio
import time

import grpc
from prometheus_client import Histogram

from cartwise.v1 import search_pb2

SERVICE_PREFIX = "/" + search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name + "/"


class RequestMetrics(grpc.aio.ServerInterceptor):
    """Time every unary SearchService method (Search, Recommend) into ``histogram`` (labels method,
    status), in seconds; other services (admin, health, reflection) pass through untouched."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or not details.method.startswith(SERVICE_PREFIX):
            return handler
        behavior, method = handler.unary_unary, details.method.removeprefix(SERVICE_PREFIX)
        histogram = self.histogram

        async def timed(request, context):
            started, status = time.perf_counter(), None
            try:
                response = await behavior(request, context)
                status = _code_name(context.code()) or "OK"
                return response
            except asyncio.CancelledError:
                status = "CANCELLED"
                raise
            except BaseException:  # context.abort raises after setting the code; anything else is UNKNOWN
                status = _code_name(context.code()) or "UNKNOWN"
                raise
            finally:
                histogram.labels(method, status).observe(time.perf_counter() - started)

        return handler._replace(unary_unary=timed)


def _code_name(code) -> str | None:
    """The name of a grpc.StatusCode (or of its integer value, as grpc.aio's context may hold it)."""
    if code is None:
        return None
    if isinstance(code, grpc.StatusCode):
        return code.name
    for known in grpc.StatusCode:
        if known.value[0] == code:
            return known.name
    return str(code)
