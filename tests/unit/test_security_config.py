"""Security settings and what each client gets from them: API tokens (hidden everywhere), the binding check,
TLS file pairs, and the SASL/TLS pass-through to kafka-python, aiokafka and faust and the API key to
qdrant-client. Pure functions: no broker with SASL and no Qdrant server with an API key exist here."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from cartwise.client import channel_credentials
from cartwise.index.server import qdrant_client_options
from cartwise.kafka_io import aiokafka_security, kafka_python_security, producer_config, tail_consumer
from cartwise.settings import Settings
from grpc_api.security import BearerTokenAuth, SecurityConfigError, ServerSecurity, is_loopback
from streams.faust_config import broker_credentials

SASL = {"kafka_bootstrap": "kafka-1:9093", "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "cartwise", "kafka_sasl_password": "kafka-secret-pw"}


def test_tokens_are_read_comma_separated_and_never_shown(monkeypatch):
    monkeypatch.setenv("CARTWISE_API_TOKENS", " first-token-1 ,second-token-2,, ")
    settings = Settings()
    assert [t.get_secret_value() for t in settings.api_tokens] == ["first-token-1", "second-token-2"]
    assert settings.client_token.get_secret_value() == "first-token-1"
    assert Settings(api_token="client-token").client_token.get_secret_value() == "client-token"
    assert Settings(api_tokens="").api_tokens == ()
    for shown in (repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert "first-token-1" not in shown and "second-token-2" not in shown


def test_a_bad_token_is_refused_without_echoing_it():
    with pytest.raises(ValidationError) as err:
        Settings(api_tokens="good-token,bad token")
    assert "bad token" not in str(err.value) and "good-token" not in str(err.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_may_serve_without_authentication(host):
    assert is_loopback(host)
    assert ServerSecurity.from_settings(Settings(grpc_host=host)).tokens == ()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.internal"])
def test_a_reachable_host_needs_tokens_client_certificates_or_an_explicit_opt_out(host):
    with pytest.raises(SecurityConfigError, match="refusing to serve"):
        ServerSecurity.from_settings(Settings(grpc_host=host))
    assert ServerSecurity.from_settings(Settings(grpc_host=host, api_tokens="some-token")).tokens
    assert ServerSecurity.from_settings(Settings(grpc_host=host, api_allow_unauthenticated=True)).interceptors() == []


def test_incomplete_tls_settings_are_refused(tmp_path):
    with pytest.raises(SecurityConfigError, match="both CARTWISE_TLS_CERT_FILE"):
        ServerSecurity.from_settings(Settings(tls_cert_file=tmp_path / "server.crt"))
    with pytest.raises(SecurityConfigError, match="mTLS"):
        ServerSecurity.from_settings(Settings(tls_client_ca_file=tmp_path / "ca.crt"))
    with pytest.raises(SecurityConfigError, match="cannot read .*missing.key"):
        ServerSecurity.from_settings(Settings(tls_cert_file=tmp_path / "missing.crt", tls_key_file=tmp_path / "missing.key"))
    with pytest.raises(SecurityConfigError, match="CLIENT_KEY_FILE"):
        channel_credentials(Settings(tls_client_cert_file=tmp_path / "client.crt"))
    assert channel_credentials(Settings()) is None


def test_token_check_names_the_problem_and_accepts_any_configured_token():
    auth = BearerTokenAuth(Settings(api_tokens="alpha-token,bravo-token").api_tokens)
    assert auth.problem(()).startswith("missing bearer token")
    assert auth.problem((("authorization", "Basic alpha-token"),)).startswith("malformed")
    assert auth.problem((("authorization", "Bearer alpha-tok"),)) == "invalid bearer token"
    assert auth.problem((("authorization", "Bearer alpha-token"),)) is None
    assert auth.problem((("x-other", "1"), ("authorization", "bearer bravo-token"))) is None
    with pytest.raises(ValueError):
        BearerTokenAuth(())


def test_kafka_python_clients_get_sasl_and_tls_from_settings():
    settings = Settings(**SASL, kafka_ssl_cafile=certifi.where())
    expected = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "cartwise",
                "sasl_plain_password": "kafka-secret-pw", "ssl_cafile": certifi.where()}
    assert kafka_python_security(settings) == expected
    assert producer_config(settings).items() >= expected.items()
    assert "kafka-secret-pw" not in repr(settings)


def test_aiokafka_and_faust_get_the_same_login_and_a_verifying_tls_context():
    settings = Settings(**SASL, kafka_ssl_cafile=certifi.where())
    config = aiokafka_security(settings)
    context = config.pop("ssl_context")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname and context.get_ca_certs()
    assert config == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                      "sasl_plain_username": "cartwise", "sasl_plain_password": "kafka-secret-pw"}
    credentials = broker_credentials(settings)
    assert "kafka-secret-pw" not in repr(credentials)
    faust_config = credentials_to_aiokafka_auth(credentials)  # what faust's driver hands aiokafka
    assert faust_config.pop("ssl_context").verify_mode == ssl.CERT_REQUIRED
    assert faust_config == config


async def test_the_tail_consumer_is_built_with_the_login():
    consumer = tail_consumer(Settings(**{**SASL, "kafka_security_protocol": "SASL_PLAINTEXT"}))
    client = consumer._client  # aiokafka keeps the connection settings on its client until start()
    assert (client._security_protocol, client._sasl_mechanism, client._sasl_plain_username,
            client._sasl_plain_password) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "cartwise", "kafka-secret-pw")


def test_tls_only_kafka_and_plaintext():
    tls = Settings(kafka_bootstrap="kafka-1:9093", kafka_security_protocol="SSL")
    assert kafka_python_security(tls) == {"security_protocol": "SSL"}
    assert credentials_to_aiokafka_auth(broker_credentials(tls))["security_protocol"] == "SSL"
    plain = Settings(kafka_bootstrap="kafka-1:9092")
    assert kafka_python_security(plain) == aiokafka_security(plain) == {} and broker_credentials(plain) is None


def test_the_embedded_broker_is_plaintext_whatever_the_kafka_security_settings():
    settings = Settings(**{**SASL, "kafka_bootstrap": None})
    assert kafka_python_security(settings) == aiokafka_security(settings) == {}
    assert broker_credentials(settings) is None and "security_protocol" not in producer_config(settings)


def test_sasl_without_a_login_is_refused():
    with pytest.raises(ValidationError, match="CARTWISE_KAFKA_SASL_USERNAME"):
        Settings(kafka_bootstrap="kafka-1:9093", kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u")


def test_qdrant_client_gets_the_api_key_and_the_ca():
    settings = Settings(qdrant_url="https://qdrant.internal:6334", qdrant_api_key="qdrant-secret-key",
                        qdrant_ca_file=certifi.where())
    options = qdrant_client_options(settings)
    assert options["url"] == "https://qdrant.internal:6334" and options["prefer_grpc"]
    assert options["api_key"] == "qdrant-secret-key"
    assert options["grpc_options"]["root_certificates"] == Path(certifi.where()).read_bytes()
    assert options["verify"].get_ca_certs()
    assert "qdrant-secret-key" not in repr(settings)
    assert qdrant_client_options(Settings(qdrant_url="http://qdrant:6333")) == {"url": "http://qdrant:6333",
                                                                                 "prefer_grpc": True}
