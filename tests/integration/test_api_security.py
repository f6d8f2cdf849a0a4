"""API security over real gRPC on loopback: the ApiServer with a real SearchServicer (ONNX encoder, a Qdrant
Edge index) behind bearer tokens, TLS and mTLS, with certificates made here by the openssl command."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cartwise.app.cli import main
from cartwise.client import AsyncClient, open_channel
from cartwise.app.operations import fetch_status
from cartwise.index import EdgeIndex, InlineAsyncIndex
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from cartwise.v1 import admin_pb2, admin_pb2_grpc
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc
from encoders.batching import QueryBatcher
from encoders.runtime import ActiveModel, ServingModel
from grpc_api.admin import AdminServicer
from grpc_api.security import ServerSecurity
from grpc_api.server import ApiServer
from streams.swap import ensure_collections
from grpc_api.servicer import SearchServicer

pytestmark = pytest.mark.integration
TOKENS = ("tok-alpha-0123456789", "tok-bravo-9876543210")
SEARCH = pb.SearchRequest(query="cordless drill", limit=3)


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(cwd: Path, name: str) -> None:
    _openssl(cwd, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")


def _issue(cwd: Path, ca: str, name: str, extensions: str) -> None:
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(cwd, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    _openssl(cwd, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A server CA and a server certificate for localhost / 127.0.0.1; a client CA with one client
    certificate; and a stranger CA with a client certificate the server must refuse."""
    root = tmp_path_factory.mktemp("pki")
    _ca(root, "server-ca")
    _issue(root, "server-ca", "server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for ca, client in (("client-ca", "client"), ("stranger-ca", "stranger")):
        _ca(root, ca)
        _issue(root, ca, client, "extendedKeyUsage=clientAuth\n")
    return root


@pytest.fixture(scope="module")
def serving(registry_dir, tmp_path_factory):
    """The active model and an index holding its (empty) collections."""
    registry = ModelRegistry(registry_dir)
    model = ServingModel.load(registry, registry.active())
    index = EdgeIndex(tmp_path_factory.mktemp("qdrant"))
    ensure_collections(index, model)
    yield ActiveModel(model), index
    index.close()


class NoBrokerAdmin(AdminServicer):
    """AdminService without a broker to ask: the consumer lag is reported unknown at once."""

    async def _lag(self):
        return None


@asynccontextmanager
async def api(serving, settings: Settings):
    """An ApiServer on a free loopback port with ``settings``' security; yields ``127.0.0.1:port``."""
    active, index = serving
    reader = InlineAsyncIndex(index)
    server = ApiServer(SearchServicer(settings, reader, active, QueryBatcher()),
                       NoBrokerAdmin(settings, reader, active, "api", None), settings.grpc_host, 0,
                       ServerSecurity.from_settings(settings))
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def token_api(serving):
    async with api(serving, Settings(api_tokens=",".join(TOKENS))) as target:
        yield target


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _search_code(target: str, metadata=None, credentials=None) -> grpc.StatusCode:
    channel = (grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target))
    async with channel:
        try:
            await pb_grpc.SearchServiceStub(channel).Search(SEARCH, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("metadata, message", [
    (None, "missing bearer token"),
    (bearer("tok-alpha-wrong-value"), "invalid bearer token"),
    (bearer(TOKENS[0] + "x"), "invalid bearer token"),
    ((("authorization", f"Basic {TOKENS[0]}"),), "malformed authorization metadata"),
    ((("authorization", "Bearer "),), "malformed authorization metadata"),
])
async def test_search_without_a_valid_token_is_unauthenticated(token_api, metadata, message):
    async with grpc.aio.insecure_channel(token_api) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.SearchServiceStub(channel).Search(SEARCH, metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details().startswith(message)
    assert TOKENS[0] not in err.value.details()


@pytest.mark.parametrize("token", TOKENS)
async def test_each_configured_token_is_served(token_api, token, serving):
    async with grpc.aio.insecure_channel(token_api) as channel:
        response = await pb_grpc.SearchServiceStub(channel).Search(SEARCH, metadata=bearer(token), timeout=30)
    assert response.model_version == serving[0].current.version


async def test_admin_service_needs_the_token_too(token_api):
    async with grpc.aio.insecure_channel(token_api) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin_pb2_grpc.AdminServiceStub(channel).GetStatus(admin_pb2.GetStatusRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    status = await fetch_status(token_api, settings=Settings(api_token=TOKENS[1]))
    assert status.role == "api" and status.active_version and status.lag == -1


async def test_health_is_open_and_reflection_is_not(token_api):
    async with grpc.aio.insecure_channel(token_api) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="cartwise.v1.SearchService"), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        async def services(metadata=None) -> list[str]:
            call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=10)
            return [s.name async for r in call for s in r.list_services_response.service]

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await services()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "cartwise.v1.SearchService" in await services(bearer(TOKENS[0]))


async def test_authentication_comes_before_decoding(token_api):
    async with grpc.aio.insecure_channel(token_api) as channel:
        call = channel.unary_unary("/cartwise.v1.SearchService/Search", request_serializer=lambda b: b,
                                   response_deserializer=pb.SearchResponse.FromString)
        for metadata, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                               (bearer(TOKENS[0]), grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"\xff\xff\xff\xff", metadata=metadata, timeout=10)
            assert err.value.code() == code


async def test_clients_send_the_token_from_settings(token_api, serving):
    async with AsyncClient(token_api, Settings(api_tokens=TOKENS[1])) as client:  # sends its first token
        assert (await client.search("drill", limit=1, timeout_s=30)).model_version
    async with AsyncClient(token_api, Settings()) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.search("drill", limit=1)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_cli_search_uses_the_environments_token(token_api):
    runner = CliRunner()
    refused = await asyncio.to_thread(runner.invoke, main, ["search", "drill", "--json", "--target", token_api],
                                      env={"CARTWISE_API_TOKEN": None, "CARTWISE_API_TOKENS": None})
    assert refused.exit_code == 1 and "UNAUTHENTICATED: missing bearer token" in refused.output
    served = await asyncio.to_thread(runner.invoke, main, ["search", "drill", "--json", "--target", token_api],
                                     env={"CARTWISE_API_TOKEN": TOKENS[0]})
    assert served.exit_code == 0, served.output
    assert '"model_version"' in served.output


async def test_no_token_reaches_the_logs_or_a_repr(serving, caplog):
    caplog.set_level(logging.DEBUG)
    settings = Settings(api_tokens=",".join(TOKENS), api_token=TOKENS[0])
    async with api(serving, settings) as target:
        await _search_code(target, bearer("wrong"))
        await _search_code(target, bearer(TOKENS[0]))
    shown = caplog.text + repr(settings) + str(settings.model_dump()) + repr(ServerSecurity.from_settings(settings))
    assert "2 bearer token(s)" in caplog.text
    assert not any(token in shown for token in TOKENS)


def tls_settings(pki: Path, **client) -> Settings:
    server = {"tls_cert_file": pki / "server.crt", "tls_key_file": pki / "server.key"}
    return Settings(**server, **client)


async def test_tls_handshake_with_the_test_ca(serving, pki):
    async with api(serving, tls_settings(pki, api_tokens=TOKENS[0])) as target:
        async with AsyncClient(target, Settings(tls_ca_file=pki / "server-ca.crt", api_token=TOKENS[0])) as client:
            assert (await client.search("drill", limit=1, timeout_s=30)).model_version
        # a plaintext client, and one that trusts only the system's CAs, get no connection
        assert await _search_code(target, bearer(TOKENS[0])) == grpc.StatusCode.UNAVAILABLE
        assert (await _search_code(target, bearer(TOKENS[0]), grpc.ssl_channel_credentials())
                == grpc.StatusCode.UNAVAILABLE)
        # TLS does not replace the token
        async with AsyncClient(target, Settings(tls_ca_file=pki / "server-ca.crt")) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.search("drill", limit=1)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_mtls_refuses_a_client_without_a_trusted_certificate(serving, pki):
    async with api(serving, tls_settings(pki, tls_client_ca_file=pki / "client-ca.crt")) as target:
        ca = {"tls_ca_file": pki / "server-ca.crt"}
        for refused in (Settings(**ca),
                        Settings(**ca, tls_client_cert_file=pki / "stranger.crt", tls_client_key_file=pki / "stranger.key")):
            async with open_channel(refused, target) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await pb_grpc.SearchServiceStub(channel).Search(SEARCH, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        trusted = Settings(**ca, tls_client_cert_file=pki / "client.crt", tls_client_key_file=pki / "client.key")
        async with AsyncClient(target, trusted) as client:
            assert (await client.search("drill", limit=1, timeout_s=30)).model_version
