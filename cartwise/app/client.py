"""The API's client side: one helper builds every channel (TLS and the bearer token from settings), and a
small async client of SearchService for the CLI, the demo and the benchmarks.

A client sends ``Settings.client_token`` (``CARTWISE_API_TOKEN``, else the first of ``CARTWISE_API_TOKENS``)
and connects with TLS when ``CARTWISE_TLS_CA_FILE`` names the CA to trust (with ``CARTWISE_TLS_CLIENT_CERT_FILE``
and ``..._KEY_FILE`` for an mTLS server)."""

from __future__ import annotations

import grpc
from pydantic import SecretStr

from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc
from grpc_api.security import SecurityConfigError, read_pem


class _BearerToken(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor,
                   grpc.aio.StreamUnaryClientInterceptor, grpc.aio.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call. Metadata rather than grpc's call credentials,
    which a plaintext channel refuses to send: plaintext serves loopback, and networks where TLS ends in
    front of the service."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("authorization", f"Bearer {self._token.get_secret_value()}")
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._with_token(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._with_token(client_call_details), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(self._with_token(client_call_details), request_iterator)

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(self._with_token(client_call_details), request_iterator)


def api_target(settings: Settings) -> str:
    """``host:port`` of the API the settings name (``CARTWISE_GRPC_HOST:PORT``)."""
    return f"{settings.grpc_host}:{settings.grpc_port}"


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting ``tls_ca_file`` (with the client certificate for mTLS when set); None for
    plaintext (no CA and no client certificate set). Raises SecurityConfigError for half a client key pair
    or an unreadable file."""
    ca, cert, key = settings.tls_ca_file, settings.tls_client_cert_file, settings.tls_client_key_file
    if (cert is None) != (key is None):
        raise SecurityConfigError("mTLS needs both CARTWISE_TLS_CLIENT_CERT_FILE and CARTWISE_TLS_CLIENT_KEY_FILE")
    if ca is None and cert is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=read_pem(ca) if ca else None,
                                        private_key=read_pem(key) if key else None,
                                        certificate_chain=read_pem(cert) if cert else None)


def open_channel(settings: Settings, target: str | None = None) -> grpc.aio.Channel:
    """An aio channel to ``target`` (default: :func:`api_target`) with the settings' TLS and bearer token
    (module doc); use it as ``async with``. Raises SecurityConfigError (:func:`channel_credentials`)."""
    target = target or api_target(settings)
    token = settings.client_token
    interceptors = [_BearerToken(token)] if token else None
    credentials = channel_credentials(settings)
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, interceptors=interceptors)


class SearchClient:
    """``async with SearchClient(target) as client: await client.search("drill", user_id="42")``. TLS and
    the token come from ``settings`` (default: the environment's, :func:`open_channel`); ``target`` defaults
    to the settings' API address."""

    def __init__(self, target: str | None = None, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.target = target or api_target(settings)
        self.channel = open_channel(settings, self.target)
        self.stub = pb_grpc.SearchServiceStub(self.channel)

    async def __aenter__(self) -> "SearchClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.channel.close()

    async def search(self, query: str, user_id: str = "", limit: int = 10, timeout_s: float = 5.0,
                     **fields) -> pb.SearchResponse:
        """Call Search; ``fields`` are further SearchRequest fields. Raises grpc.aio.AioRpcError."""
        request = pb.SearchRequest(query=query, user_id=user_id, limit=limit, **fields)
        return await self.stub.Search(request, timeout=timeout_s)
