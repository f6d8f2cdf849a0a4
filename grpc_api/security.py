"""Who may call the API: bearer tokens checked by a server interceptor, and TLS or mTLS server credentials.

With ``CARTWISE_API_TOKENS`` set, every method needs gRPC metadata ``authorization: Bearer <token>``
(UNAUTHENTICATED otherwise) except the health service, which load balancers and orchestrators probe without
credentials. Reflection needs a token too: it describes the API to whoever asks, and grpcurl sends the same
``-H 'authorization: Bearer ...'`` header to reflection as to the calls.

A server bound beyond loopback must authenticate its callers (tokens or client certificates) unless the
operator says otherwise (``CARTWISE_API_ALLOW_UNAUTHENTICATED``): the API answers with shoppers' purchase
histories, in effect (Recommend, personalized Search), so an exposed open port is refused, not warned about."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass
from typing import Iterable

import grpc
from grpc_health.v1 import health
from pydantic import SecretStr

from cartwise.credentials import SecurityConfigError, read_pem  # shared with the client; importable from here too
from cartwise.settings import Settings

log = logging.getLogger(__name__)

OPEN_SERVICES = frozenset({health.SERVICE_NAME})
_HANDLER_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class BearerTokenAuth(grpc.aio.ServerInterceptor):
    """Require ``authorization: Bearer <token>`` metadata with one of ``tokens`` on every method outside
    ``open_services``; a call without it is answered UNAUTHENTICATED before its request reaches a servicer.
    Raises ValueError when ``tokens`` is empty."""

    def __init__(self, tokens: Iterable[SecretStr], open_services: frozenset[str] = OPEN_SERVICES) -> None:
        self._tokens = tuple(t.get_secret_value().encode() for t in tokens)
        if not self._tokens:
            raise ValueError("BearerTokenAuth needs at least one token")
        self._open = open_services

    async def intercept_service(self, continuation, details):
        if details.method.split("/")[1] in self._open:  # "/package.Service/Method"
            return await continuation(details)
        problem = self.problem(details.invocation_metadata)
        handler = await continuation(details)
        if problem is None or handler is None:  # no such method: UNIMPLEMENTED, as without tokens
            return handler

        async def deny(request_or_iterator, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

        kind = next(k for k in _HANDLER_KINDS if getattr(handler, k) is not None)
        return handler._replace(**{kind: deny})

    def problem(self, metadata) -> str | None:
        """Why ``metadata`` (the call's invocation metadata) is not authorized, or None when it is."""
        values = [value for key, value in metadata or () if key == "authorization"]
        if not values:
            return "missing bearer token: send gRPC metadata 'authorization: Bearer <token>'"
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "malformed authorization metadata: expected 'Bearer <token>'"
        candidate = token.strip().encode()
        matched = False
        for known in self._tokens:  # every token compared, in constant time: no timing says which or how close
            matched |= hmac.compare_digest(candidate, known)
        return None if matched else "invalid bearer token"


@dataclass(frozen=True)
class ServerSecurity:
    """What the API server enforces: bearer ``tokens`` (empty: none) and TLS ``credentials`` (None:
    plaintext), ``mutual`` when they require client certificates."""

    tokens: tuple[SecretStr, ...] = ()
    credentials: grpc.ServerCredentials | None = None
    mutual: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServerSecurity":
        """Read the certificate files the settings name and check the binding. Raises SecurityConfigError
        (a certificate without its key, a client CA without a server certificate, an unreadable file, or a
        non-loopback ``grpc_host`` that authenticates nobody, see the module doc)."""
        credentials = server_credentials(settings)
        mutual = settings.tls_client_ca_file is not None
        if not (is_loopback(settings.grpc_host) or settings.api_tokens or mutual or settings.api_allow_unauthenticated):
            raise SecurityConfigError(
                f"refusing to serve {settings.grpc_host}:{settings.grpc_port} without authentication: set "
                "CARTWISE_API_TOKENS (or CARTWISE_TLS_CLIENT_CA_FILE for mTLS), bind CARTWISE_GRPC_HOST=127.0.0.1, "
                "or set CARTWISE_API_ALLOW_UNAUTHENTICATED=true when the network in front of it authenticates")
        if settings.api_tokens and credentials is None and not is_loopback(settings.grpc_host):
            log.warning("bearer tokens travel unencrypted to %s: set CARTWISE_TLS_CERT_FILE and CARTWISE_TLS_KEY_FILE "
                        "unless TLS ends in front of the service", settings.grpc_host)
        return cls(settings.api_tokens, credentials, mutual)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The authentication interceptor when tokens are set (empty list otherwise)."""
        return [BearerTokenAuth(self.tokens)] if self.tokens else []

    def describe(self) -> str:
        """A log line's account of it (never a token)."""
        tls = "mTLS" if self.mutual else "TLS" if self.credentials else "plaintext"
        auth = f"{len(self.tokens)} bearer token(s)" if self.tokens else "no tokens"
        return f"{tls}, {auth}"


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from ``tls_cert_file`` and ``tls_key_file`` (PEM), requiring client certificates
    signed by ``tls_client_ca_file`` when it is set; None when no certificate is set (plaintext).
    Raises SecurityConfigError for an incomplete set or an unreadable file."""
    cert, key, client_ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if cert is None and key is None:
        if client_ca is not None:
            raise SecurityConfigError("CARTWISE_TLS_CLIENT_CA_FILE (mTLS) needs CARTWISE_TLS_CERT_FILE and "
                                      "CARTWISE_TLS_KEY_FILE")
        return None
    if cert is None or key is None:
        raise SecurityConfigError("TLS needs both CARTWISE_TLS_CERT_FILE and CARTWISE_TLS_KEY_FILE")
    return grpc.ssl_server_credentials([(read_pem(key), read_pem(cert))],
                                       root_certificates=read_pem(client_ca) if client_ca else None,
                                       require_client_auth=client_ca is not None)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only ever accepts connections from this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another name: it may resolve anywhere
        return False
