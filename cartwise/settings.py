"""Service settings, read from the environment with the ``CARTWISE_`` prefix (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cartwise.events import EventLimits

# npm packages of a source checkout (`make install` runs `npm ci` beside pyproject.toml)
NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"


Precision = Literal["int8", "fp32"]


class Topics(BaseSettings):
    """Kafka topic names. An invalid event on topic ``T`` goes to ``T.dlq``."""

    model_config = SettingsConfigDict(env_prefix="CARTWISE_TOPIC_")

    catalog: str = "catalog.products"
    purchases: str = "behavior.purchases"
    carts: str = "behavior.carts"
    views: str = "behavior.views"
    models_updates: str = "models.updates"
    user_control: str = "control.users"
    impressions: str = "behavior.impressions"  # what each answer showed (cartwise.events.Impression)

    @property
    def behavior(self) -> tuple[str, str, str]:
        """The three behavior topics, all keyed by user_id and co-partitioned."""
        return (self.purchases, self.carts, self.views)

    @property
    def user_keyed(self) -> tuple[str, str, str, str]:
        """The behavior topics and the user control topic (erasure requests): co-partitioned by user_id,
        consumed by one agent, so a user's events of every kind are processed in one place."""
        return (*self.behavior, self.user_control)

    @staticmethod
    def dead_letter(topic: str) -> str:
        """Dead-letter topic of ``topic``."""
        return f"{topic}.dlq"


class Personalization(BaseSettings):
    """User vector and fusion parameters (cartwise/personalization.py; docs/architecture.md, "Personalization").

    u = normalize(sum_i w(type_i) * 2^(-(t_last - t_i) / H) * p_i);
    s(q, u, p) = <q, p> + alpha(n) <u, p>,  alpha(n) = alpha_max * n / (n + n0).
    """

    model_config = SettingsConfigDict(env_prefix="CARTWISE_PERSONALIZATION_")

    # tuned on REES46 (docs/training.md, "Personalization parameters"): 2.0 / 1 beat 0.5 / 3 on held-out users
    alpha_max: float = Field(2.0, ge=0.0, le=10.0)
    n0: float = Field(1.0, gt=0.0)
    half_life_s: float = Field(6 * 3600.0, gt=0.0, description="H, seconds")
    weight_purchase: float = 1.0
    weight_cart: float = 0.6
    weight_view: float = 0.2
    max_history: int = Field(50, ge=1, description="interactions kept per user")

    def weight(self, event_type: str) -> float:
        """w(type) for 'purchase', 'cart' or 'view'; raises KeyError for any other type."""
        return {"purchase": self.weight_purchase, "cart": self.weight_cart, "view": self.weight_view}[event_type]


class Lexical(BaseSettings):
    """BM25 sparse vectors and their fusion with the dense side (cartwise/lexical.py; docs/architecture.md,
    "Hybrid retrieval"). k1, b and avg_doc_len shape the indexed vectors: changing them needs a re-index."""

    model_config = SettingsConfigDict(env_prefix="CARTWISE_LEXICAL_")

    # Tuned on half of the Home Depot validation queries, confirmed on the other half (docs/eval.md): short
    # product titles want nearly binary term frequency (k1 0.2) and the mean title length as avgdl.
    k1: float = Field(0.2, gt=0.0, description="BM25 term-frequency saturation")
    b: float = Field(0.5, ge=0.0, le=1.0, description="BM25 length normalization")
    avg_doc_len: float = Field(11.2, gt=0.0, description="avgdl, tokens per product text after stopwords")
    weight: float = Field(0.5, ge=0.0, le=1.0, description="w: the lexical side's share of the fused score")
    scale: float = Field(0.15, gt=0.0, description="κ: puts BM25 on the inner product's scale")
    candidates: int = Field(100, ge=1, le=1000, description="candidates taken from each side before fusion")


class Settings(BaseSettings):
    """Top-level settings. With ``kafka_bootstrap`` unset the CLI starts an embedded broker;
    with ``qdrant_url`` unset the index is Qdrant Edge in-process under ``data_dir``."""

    # hide_input_in_errors: a validation error must not print a token or password it was given
    model_config = SettingsConfigDict(env_prefix="CARTWISE_", env_nested_delimiter="__", hide_input_in_errors=True)

    data_dir: Path = Path(".data")
    kafka_bootstrap: str | None = None
    kafka_idempotence: bool = Field(
        True, description="acks=all with idempotent producers on a configured broker; false for a "
                          "Kafka-protocol broker without InitProducerId (e.g. a Tansu started by hand)")
    # Kafka security applies to a configured broker only: the embedded one is plaintext on 127.0.0.1.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how every Kafka client (kafka-python, aiokafka, faust) talks to a configured broker")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates "
                                                            "(default: the system's)")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate, for brokers that require one")
    kafka_ssl_keyfile: Path | None = None
    embedded_kafka_port: int = 19092
    embedded_kafka_storage: Literal["disk", "memory"] = Field(
        "disk", description="disk: the embedded broker keeps events, offsets and changelogs under DATA_DIR/broker "
                            "across restarts; memory: everything is lost when the service stops")
    embedded_storage_port: int | None = Field(
        None, description="port of the embedded broker's on-disk store (default: the broker's port + 1)")
    retention_s: float = Field(
        7 * 86400.0, gt=0, description="the embedded broker keeps event topics (behavior, impressions, control, "
                                       "dead-letter) this long, s, and never what the worker group has not "
                                       "committed; compacted topics keep each key's last record (and a deleted "
                                       "key's tombstone this long)")
    s3rver: Path = Field(NODE_MODULES / "s3rver" / "bin" / "s3rver.js",
                         description="s3rver's script (installed by `make install` from package-lock.json)")
    qdrant_url: str | None = Field(None, description="a Qdrant server (https://... for TLS); unset: Qdrant Edge")
    qdrant_api_key: SecretStr | None = None
    qdrant_ca_file: Path | None = Field(None, description="CA bundle of the Qdrant server's certificate "
                                                          "(default: the system's)")
    edge_search_threads: int | None = Field(1, ge=1, description="Qdrant Edge search pool size (None: CPUs)")
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int | None = Field(None, ge=0, le=65535,
                                     description="serve Prometheus metrics on http://METRICS_HOST:PORT/metrics "
                                                 "(every role; cartwise/metrics.py); unset: no endpoint")
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds (0.0.0.0 in a container)")
    playground_port: int | None = Field(None, ge=0, le=65535,
                                        description="serve the search playground on http://PLAYGROUND_HOST:PORT/ "
                                                    "(roles all and api; cartwise/app/playground.py); unset: none")
    playground_host: str = Field("127.0.0.1", description="address the playground binds; beyond loopback only "
                                                          "with api_tokens (or api_allow_unauthenticated)")
    # API security (grpc_api/security.py; the client side in cartwise/client.py)
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="bearer tokens the API accepts, comma-separated; empty: no authentication")
    api_token: SecretStr | None = Field(None, description="the token clients (the CLI) send; default: the first "
                                                          "of api_tokens")
    api_allow_unauthenticated: bool = Field(
        False, description="serve a non-loopback grpc_host without tokens or client certificates")
    tls_cert_file: Path | None = Field(None, description="server: certificate chain (PEM); set with tls_key_file "
                                                         "to serve TLS")
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = Field(None, description="server: require client certificates signed by "
                                                              "this CA (mTLS)")
    tls_ca_file: Path | None = Field(None, description="client: connect with TLS, trusting this CA")
    tls_client_cert_file: Path | None = Field(None, description="client: certificate (PEM) for an mTLS server")
    tls_client_key_file: Path | None = None
    app_id: str = "cartwise"
    partitions: int = Field(1, ge=1, description="partitions of each topic the service creates")
    consumer_fetch_max_wait_ms: int | None = Field(
        None, ge=1, description="fetch long-poll bound, ms (default: 100 on the embedded broker's disk store, "
                                "each of whose polls lists the partition's batches, few since the log maintenance "
                                "merges them; 50 otherwise: streams/faust_hooks.py)")
    consumer_session_timeout_s: float = Field(
        10.0, ge=6.0, description="consumer group session and rebalance timeout: how long a crashed worker's "
                                  "partitions wait before the group hands them to a live member (the embedded "
                                  "broker also holds a worker's first join for half of it)")
    producer_linger_ms: float = Field(
        5.0, ge=0.0, description="worker producer batching (changelog, dead letters); 0 sends each record alone")
    hnsw_ef: int = Field(128, ge=1, description="HNSW candidate list per search (at least the limit)")
    catalog_batch: int = 256
    catalog_batch_window_s: float = 0.02
    behavior_batch: int = Field(1024, ge=1, description="behavior events the stream worker applies together, at "
                                                        "most (a user's events in one batch cost one history "
                                                        "write and one user-point write)")
    behavior_batch_window_s: float = Field(0.1, gt=0.0, description="how long the stream worker waits for a "
                                                                   "behavior batch to fill (seconds; adds up "
                                                                   "to this much to freshness when traffic "
                                                                   "is light)")
    optimize_quiet_s: float = Field(5.0, ge=0.0, description="Qdrant Edge: build a products collection's HNSW "
                                                           "graph once the catalog has been quiet this long "
                                                           "after upserts (streams/indexing.py)")
    optimize_after_upserts: int = Field(20_000, ge=1, description="Qdrant Edge: or after this many upserts "
                                                                  "during a long catalog load")
    # A larger batch pads less (more texts sorted by length before the encoder's chunks): 1,024 re-embedded
    # Home Depot at 392-397 products/s against 252/s at 128, but Search p99 during the swap rose from 62 ms to
    # 206-658 ms (docs/benchmarks.md, issue #13 session 13), so the default stays 128
    backfill_batch: int = Field(128, ge=1, description="products embedded per backfill step during a model swap "
                                                       "(larger: a faster backfill, a slower Search meanwhile)")
    encoder_max_batch: int = 32
    encoder_threads: int = 1
    bulk_encode_threads: int = Field(2, ge=1, description="threads the catalog agent and a swap's backfill embed "
                                                          "products on (each runs a part of every batch)")
    # int8 copies lose 0.0003 nDCG@10 on the served Home Depot validation ranking and cost 0.57x the CPU per
    # product (docs/benchmarks.md, "Encoder cost and int8"): inside issue #13's 0.005 bound, so the default.
    encoder_precision: Precision = Field(
        "int8", description="the encoder a first start activates and `trainer cycle` gates and swaps in: "
                            "the int8 copy of a version (MatMul weights, per channel) or the version itself (fp32)")
    # A 3-layer query tower distilled from the int8 pretrained encoder kept the served Home Depot validation
    # nDCG@10 and Recall@100 within 0.005 at 0.63x the query CPU (docs/training.md, "Distilled query tower"),
    # but distilling costs a cycle about 8 min of CPU on two cores, so a cycle does it only when asked.
    query_tower_layers: int = Field(0, ge=0, le=6, description="layers of the query tower `trainer cycle` distills "
                                                               "into its candidate (trainer/distill.py); 0: the "
                                                               "candidate serves queries with its full encoder")
    query_cache_size: int = Field(10_000, ge=0, description="query embeddings the API keeps (LRU, keyed by model "
                                                            "version and token ids; 1.5 KB each); 0: none")
    max_query_chars: int = 512
    max_event_bytes: int = Field(65_536, ge=1024, description="largest event value a worker applies; a larger "
                                                              "one goes to the dead-letter topic")
    max_event_ahead_s: float = Field(3600.0, ge=0.0, description="how far an event_time may run ahead of the "
                                                                 "wall clock before it is dead-lettered")
    user_cache_size: int = Field(50_000, ge=0, description="users the stream worker keeps cached: their points "
                                                            "(write-through, about 2 KB each) and their decoded "
                                                            "histories (about 10 KB each)")
    user_ttl_s: float = Field(90 * 86400.0, ge=0.0, description="a user with no event for this long in stream time "
                                                              "(the newest event time seen) is expired; 0: never")
    # Admission (grpc_api/admission.py): a limit on requests in flight that follows the measured latency.
    max_in_flight: int = Field(64, ge=1, description="the adaptive admission limit's upper bound: Search/Recommend "
                                                     "requests worked on at once; one more gets RESOURCE_EXHAUSTED "
                                                     "at once instead of a queue")
    min_in_flight: int = Field(2, ge=1, description="the adaptive admission limit's lower bound; requests admitted "
                                                    "with fewer than this in flight measure the no-load latency")
    admission_tolerance: float = Field(2.0, gt=1.0, description="the latency, as a multiple of the no-load "
                                                                "latency, up to which the admission limit may rise; "
                                                                "beyond it the limit falls")
    impressions_buffer: int = Field(
        10_000, ge=0, description="answers the API holds for the impressions topic while the broker is slow; "
                                  "beyond it they are dropped (counted), never a request failed; 0: none published")
    topics: Topics = Field(default_factory=Topics)
    personalization: Personalization = Field(default_factory=Personalization)
    popularity_half_life_s: float = Field(3 * 86400.0, gt=0.0, description="half-life H of the popularity counts "
                                          "that answer cold-start shoppers (cartwise/popularity.py), seconds")
    lexical: Lexical = Field(default_factory=Lexical)

    @property
    def event_limits(self) -> EventLimits:
        """What every consumed record must meet beyond its schema."""
        return EventLimits(self.max_event_bytes, self.max_event_ahead_s)

    @property
    def fetch_max_wait_ms(self) -> int:
        """The consumers' fetch long-poll bound (``consumer_fetch_max_wait_ms`` or its storage-dependent default)."""
        if self.consumer_fetch_max_wait_ms is not None:
            return self.consumer_fetch_max_wait_ms
        return 100 if self.embedded_broker and self.embedded_kafka_storage == "disk" else 50

    @property
    def embedded_broker(self) -> bool:
        """True when no broker is configured: Cartwise runs the embedded one on ``embedded_kafka_port``."""
        return self.kafka_bootstrap is None

    @property
    def storage_port(self) -> int:
        """The embedded broker's store port: set, or derived from the broker's so two services do not collide."""
        return self.embedded_storage_port or self.embedded_kafka_port + 1

    @property
    def bootstrap(self) -> str:
        """The Kafka bootstrap address every client uses: the configured broker, else the embedded one."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.embedded_kafka_port}"

    @property
    def models_dir(self) -> Path:
        """Model registry root."""
        return self.data_dir / "models"

    @property
    def index_dir(self) -> Path:
        """Qdrant Edge shards root (one shard per collection)."""
        return self.data_dir / "qdrant"

    @property
    def tables_dir(self) -> Path | None:
        """Where the stream worker keeps its Tables' state between restarts (streams/table_store.py), so a
        restart reads only their changelogs' tail; None with the embedded in-memory broker, whose logs do not
        outlive the process."""
        return None if self.embedded_broker and self.embedded_kafka_storage == "memory" else self.data_dir / "tables"

    @property
    def client_token(self) -> SecretStr | None:
        """The bearer token clients send: ``api_token``, else the first of ``api_tokens`` (a CLI beside the
        server it calls needs no second variable), else None."""
        return self.api_token or next(iter(self.api_tokens), None)

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value):
        if isinstance(value, (str, SecretStr)):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            return tuple(token.strip() for token in text.split(",") if token.strip())
        return value

    @field_validator("api_tokens", "api_token")
    @classmethod
    def _token_is_sendable(cls, value):
        # gRPC metadata values are printable ASCII; a space would split "Bearer <token>" on the server
        for token in value if isinstance(value, tuple) else (value,) if value is not None else ():
            text = token.get_secret_value()
            if not text or not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
                raise ValueError("a token must be printable ASCII without spaces (the token is not shown)")
        return value

    @model_validator(mode="after")
    def _admission_bounds(self) -> "Settings":
        if self.min_in_flight > self.max_in_flight:
            raise ValueError("CARTWISE_MIN_IN_FLIGHT must not exceed CARTWISE_MAX_IN_FLIGHT")
        return self

    @model_validator(mode="after")
    def _sasl_has_credentials(self) -> "Settings":
        if self.kafka_security_protocol.startswith("SASL") and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError("CARTWISE_KAFKA_SECURITY_PROTOCOL=SASL_* needs CARTWISE_KAFKA_SASL_USERNAME and "
                             "CARTWISE_KAFKA_SASL_PASSWORD")
        return self
