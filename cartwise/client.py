"""The Python client of the Cartwise API (``cartwise.v1.SearchService``): :class:`AsyncClient` (grpc.aio) and
:class:`Client` (blocking, the same methods: ``search``, ``recommend``, ``similar_products``), typed results,
deadlines and retries.

- **Typed results**: every answer is a :class:`SearchResult` of :class:`Hit` s, frozen dataclasses converted
  from the protobuf messages in one place (:meth:`SearchResult.from_pb`).
- **Deadlines**: every call has one, ``timeout_s`` per call or the client's default (5 s); it covers the
  retries too. A call past it raises with ``grpc.StatusCode.DEADLINE_EXCEEDED``.
- **Retries**: UNAVAILABLE (no server listening, a restart, a connection reset) is retried by grpc itself with
  exponential backoff and jitter, from the channel's service config (gRFC A6, ``retryPolicy``), at most
  ``max_attempts`` attempts in all. Other statuses are final and never retried.
- **Errors pass through**: a failed call raises ``grpc.aio.AioRpcError`` (a ``grpc.RpcError``, from
  :class:`Client` too) with the server's status: ``.code()`` (INVALID_ARGUMENT whose ``.details()`` starts
  with the field at fault, NOT_FOUND, UNAUTHENTICATED, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, UNAVAILABLE)
  and ``.details()``.
- **Security from settings**: a client sends ``Settings.client_token`` (``CARTWISE_API_TOKEN``, else the first
  of ``CARTWISE_API_TOKENS``) as ``authorization: Bearer`` metadata, and connects with TLS when
  ``CARTWISE_TLS_CA_FILE`` names the CA to trust (with ``CARTWISE_TLS_CLIENT_CERT_FILE`` and ``..._KEY_FILE``
  for an mTLS server). :func:`open_channel` is the one place channels are built (the CLI's ``status`` and
  ``health``, the load generator and the benchmarks use it too)."""

from __future__ import annotations

import asyncio
import enum
import json
import threading
from dataclasses import dataclass
from typing import Any, Coroutine, Sequence, TypedDict, TypeVar, Unpack

import grpc
from pydantic import SecretStr

from cartwise.credentials import SecurityConfigError, read_pem
from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ATTEMPTS = 4  # grpc caps attempts at 5 (grpc.max_attempts) whatever the policy says
T = TypeVar("T")


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


def retry_options(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> list[tuple[str, Any]]:
    """Channel options that make grpc retry SearchService calls answered UNAVAILABLE, ``max_attempts``
    attempts in all (2..5), with exponential backoff from 0.1 s up to 1 s (grpc draws each wait at random
    below the current backoff). Raises ValueError outside 2..5."""
    if not 2 <= max_attempts <= 5:
        raise ValueError(f"max_attempts must be 2..5 (grpc caps it at 5), got {max_attempts}")
    policy = {"maxAttempts": max_attempts, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
              "retryableStatusCodes": ["UNAVAILABLE"]}
    config = {"methodConfig": [{"name": [{"service": pb.DESCRIPTOR.services_by_name["SearchService"].full_name}],
                                "retryPolicy": policy}]}
    return [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]


def open_channel(settings: Settings, target: str | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """An aio channel to ``target`` (default: :func:`api_target`) with the settings' TLS and bearer token
    (module doc) and grpc channel ``options``; use it as ``async with``. Raises SecurityConfigError
    (:func:`channel_credentials`)."""
    target = target or api_target(settings)
    token = settings.client_token
    interceptors = [_BearerToken(token)] if token else None
    credentials = channel_credentials(settings)
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=list(options), interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)


class Retrieval(enum.IntEnum):
    """Which candidates rank a Search (``cartwise.v1.Retrieval``): HYBRID (BM25 and dense fused, the
    service's default), DENSE (the encoder, personalized) or LEXICAL (BM25 alone)."""

    UNSPECIFIED = pb.RETRIEVAL_UNSPECIFIED
    HYBRID = pb.RETRIEVAL_HYBRID
    DENSE = pb.RETRIEVAL_DENSE
    LEXICAL = pb.RETRIEVAL_LEXICAL


class Sort(enum.IntEnum):
    """The order of a Search page (``cartwise.v1.Sort``): RELEVANCE (the default), or PRICE_ASC / PRICE_DESC
    over the candidate set (the engine's 200 most relevant products, collapsed; products without a price
    last)."""

    UNSPECIFIED = pb.SORT_UNSPECIFIED
    RELEVANCE = pb.SORT_RELEVANCE
    PRICE_ASC = pb.SORT_PRICE_ASC
    PRICE_DESC = pb.SORT_PRICE_DESC


class Stock(enum.IntEnum):
    """A stock filter (``cartwise.v1.StockFilter``)."""

    ANY = pb.STOCK_FILTER_UNSPECIFIED
    IN_STOCK = pb.STOCK_FILTER_IN_STOCK
    OUT_OF_STOCK = pb.STOCK_FILTER_OUT_OF_STOCK


@dataclass(frozen=True, slots=True)
class Filter:
    """What a hit must match: a category path prefix from the root (``("electronics", "smartphone")``), any
    of ``brands`` (case-insensitive), a price range (inclusive, the catalog's currency) and the stock."""

    category_prefix: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    stock: Stock = Stock.ANY

    def to_pb(self) -> pb.Filter:
        """The ``cartwise.v1.Filter`` message."""
        bounded = self.price_min is not None or self.price_max is not None
        return pb.Filter(category_prefix=self.category_prefix, brands=self.brands, stock=self.stock,
                         price=pb.PriceRange(min=self.price_min, max=self.price_max) if bounded else None)


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked product with the parts of its score: ``score`` ranks the hits; ``semantic_score`` is
    ⟨q̂, p̂⟩ (0 without a query), ``personal_score`` ⟨û, p̂⟩ (0 for a cold or absent user) and
    ``lexical_score`` the query's BM25 (0 for dense retrieval); the fusion is in the proto's header."""

    product_id: str
    title: str
    category_path: tuple[str, ...]
    brand: str
    price: float
    in_stock: bool
    score: float
    lexical_score: float
    semantic_score: float
    personal_score: float

    @classmethod
    def from_pb(cls, hit: pb.Hit) -> "Hit":
        """The hit of a ``cartwise.v1.Hit``."""
        return cls(hit.product_id, hit.title, tuple(hit.category_path), hit.brand, hit.price, hit.in_stock,
                   hit.score, hit.lexical_score, hit.semantic_score, hit.personal_score)


@dataclass(frozen=True, slots=True)
class PriceBand:
    """``count`` products of the candidate set priced in [``min``, ``max``) (``max`` None: no upper edge)."""

    min: float
    max: float | None
    count: int


@dataclass(frozen=True, slots=True)
class Facets:
    """Facet counts over a Search's candidate set of ``candidates`` products: (value, count) pairs, most
    frequent first, of the categories one level below the filter's category prefix and of the brands
    (lower-cased, as the brand filter matches), and the non-empty price bands, cheapest first."""

    categories: tuple[tuple[str, int], ...]
    brands: tuple[tuple[str, int], ...]
    price_bands: tuple[PriceBand, ...]
    candidates: int

    @classmethod
    def from_pb(cls, facets: pb.Facets) -> "Facets":
        """The counts of a ``cartwise.v1.Facets``."""
        bands = tuple(PriceBand(b.min, b.max if b.HasField("max") else None, b.count) for b in facets.price_bands)
        return cls(tuple((c.value, c.count) for c in facets.categories),
                   tuple((b.value, b.count) for b in facets.brands), bands, facets.candidates)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """An answer of Search, Recommend or SimilarProducts: the hits, best first, and how they were made: the
    model version that embedded the query and the collection that served, the α applied to the user (n
    interactions), the retrieval and the lexical weight w applied (hybrid only), and the strategy that
    answered ("search", "personal", "similar", ...); ``request_id`` names the answer (send it back as a cart
    or purchase event's ``request_id``: the trainer learns from what was shown and not taken); ``facets``
    when the Search asked for them, else None."""

    hits: tuple[Hit, ...]
    model_version: str
    index_version: str
    personalization_weight: float
    user_interactions: int
    retrieval: Retrieval
    lexical_weight: float
    strategy: str
    request_id: str
    facets: Facets | None = None

    @classmethod
    def from_pb(cls, response: pb.SearchResponse) -> "SearchResult":
        """The result of a ``cartwise.v1.SearchResponse``."""
        return cls(tuple(Hit.from_pb(hit) for hit in response.hits), response.model_version,
                   response.index_version, response.personalization_weight, response.user_interactions,
                   Retrieval(response.retrieval), response.lexical_weight, response.strategy, response.request_id,
                   Facets.from_pb(response.facets) if response.HasField("facets") else None)


class _Options(TypedDict, total=False):
    """What every method takes: ``limit`` 1..1000 (the service's default 10), ``offset`` (hits to skip, for
    the next pages; offset + limit <= 1000), ``filter``, ``keep_duplicates`` (show every product of an
    identical text, not one) and ``timeout_s`` (this call's deadline, s)."""

    limit: int
    offset: int
    filter: Filter
    keep_duplicates: bool
    timeout_s: float


class RecommendOptions(_Options, total=False):
    """Recommend's optional arguments: the common ones and ``exclude_purchased`` (drop what the user bought)."""

    exclude_purchased: bool


class SimilarOptions(_Options, total=False):
    """SimilarProducts' optional arguments: the common ones, ``user_id`` (tilt toward the user's history) and
    ``personalization_weight`` (the weight of the user's vector instead of α(n), 0..10)."""

    user_id: str
    personalization_weight: float


class SearchOptions(RecommendOptions, total=False):
    """Search's optional arguments: those of Recommend, and ``user_id`` (personalize), ``personalization_weight``
    (α instead of α(n), 0..10), ``retrieval`` and ``lexical_weight`` (w in 0..1 for hybrid), and the
    merchandising ones: ``sort``, ``in_stock_boost`` (added to in-stock products' scores, 0..10) and
    ``facets`` (count categories, brands and price bands into the result's ``facets``)."""

    user_id: str
    personalization_weight: float
    retrieval: Retrieval
    lexical_weight: float
    sort: Sort
    in_stock_boost: float
    facets: bool


def _request_fields(options: dict) -> dict:
    """Options as protobuf fields: the filter as its message (the deadline is not a field)."""
    fields = {name: value for name, value in options.items() if name != "timeout_s"}
    if "filter" in fields:
        fields["filter"] = fields["filter"].to_pb()
    return fields


class AsyncClient:
    """``async with AsyncClient() as client: result = await client.search("cordless drill", user_id="42")``.

    ``target`` is ``host:port`` (default: the settings' ``CARTWISE_GRPC_HOST:PORT``); TLS and the token come
    from ``settings`` (default: the environment's). ``timeout_s`` is the default deadline of a call (s);
    ``max_attempts`` bounds the tries of a call answered UNAVAILABLE (:func:`retry_options`). Failed calls raise
    ``grpc.aio.AioRpcError`` with the server's status (module doc). ``channel`` and ``stub`` are the
    grpc.aio channel and the raw SearchService stub, for what the typed methods do not cover.
    Raises SecurityConfigError for TLS settings that cannot be used."""

    def __init__(self, target: str | None = None, settings: Settings | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        settings = settings or Settings()
        self.target, self.timeout_s = target or api_target(settings), timeout_s
        self.channel = open_channel(settings, self.target, retry_options(max_attempts))
        self.stub = pb_grpc.SearchServiceStub(self.channel)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        await self.channel.close()

    async def search(self, query: str = "", **options: Unpack[SearchOptions]) -> SearchResult:
        """Products for ``query`` (at most 512 characters), tilted toward ``user_id``'s history when given; an
        empty query with a user ranks by the user alone. Raises grpc.aio.AioRpcError (INVALID_ARGUMENT naming
        the field, DEADLINE_EXCEEDED, ...)."""
        timeout = options.get("timeout_s", self.timeout_s)
        request = pb.SearchRequest(query=query, **_request_fields(options))
        return SearchResult.from_pb(await self.stub.Search(request, timeout=timeout))

    async def recommend(self, user_id: str, **options: Unpack[RecommendOptions]) -> SearchResult:
        """Products for ``user_id`` from their history alone. Raises grpc.aio.AioRpcError (NOT_FOUND for a
        user with no history, INVALID_ARGUMENT naming the field, ...)."""
        timeout = options.get("timeout_s", self.timeout_s)
        request = pb.RecommendRequest(user_id=user_id, **_request_fields(options))
        return SearchResult.from_pb(await self.stub.Recommend(request, timeout=timeout))

    async def similar_products(self, product_id: str, **options: Unpack[SimilarOptions]) -> SearchResult:
        """Products like ``product_id`` (nearest to its vector, tilted toward ``user_id`` when given), without
        the product itself. Raises grpc.aio.AioRpcError (NOT_FOUND for an unknown product, INVALID_ARGUMENT
        naming the field, ...)."""
        timeout = options.get("timeout_s", self.timeout_s)
        request = pb.SimilarProductsRequest(product_id=product_id, **_request_fields(options))
        return SearchResult.from_pb(await self.stub.SimilarProducts(request, timeout=timeout))


class Client:
    """The blocking client: ``with Client() as client: result = client.search("cordless drill")``.

    The same arguments, methods and results as :class:`AsyncClient`, which it runs on an event loop of its own
    (one daemon thread per client), so usable from threads and from code that already runs a loop. Failed
    calls raise ``grpc.aio.AioRpcError``, a ``grpc.RpcError``, with the server's status."""

    def __init__(self, target: str | None = None, settings: Settings | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cartwise-client", daemon=True)
        self._thread.start()

        async def open_client() -> AsyncClient:  # the aio channel belongs to the loop it is made on
            return AsyncClient(target, settings, timeout_s=timeout_s, max_attempts=max_attempts)

        try:
            self._client = self._run(open_client())
        except BaseException:
            self._stop_loop()
            raise
        self.target = self._client.target

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        """Close the channel and stop the client's loop; the client cannot be used after."""
        if not self._loop.is_closed():
            self._run(self._client.close())
            self._stop_loop()

    def search(self, query: str = "", **options: Unpack[SearchOptions]) -> SearchResult:
        """:meth:`AsyncClient.search`, blocking. Raises grpc.RpcError."""
        return self._run(self._client.search(query, **options))

    def recommend(self, user_id: str, **options: Unpack[RecommendOptions]) -> SearchResult:
        """:meth:`AsyncClient.recommend`, blocking. Raises grpc.RpcError."""
        return self._run(self._client.recommend(user_id, **options))

    def similar_products(self, product_id: str, **options: Unpack[SimilarOptions]) -> SearchResult:
        """:meth:`AsyncClient.similar_products`, blocking. Raises grpc.RpcError."""
        return self._run(self._client.similar_products(product_id, **options))
