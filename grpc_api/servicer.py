"""SearchService: thin handlers over validation, the serving model snapshot and the page pipeline (cartwise.page)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

import grpc
import numpy as np

from cartwise.catalog import TEXT_DIGEST, ProductView, point_id
from cartwise.index import AsyncVectorIndex, IndexUnavailable
from cartwise.lexical import LexicalEncoder
from cartwise.merchandising import FacetCounts
from cartwise.page import POPULAR, Page, PageRequest, Pages
from cartwise.personalization import UserPoint, personalization_weight
from cartwise.ranking import RankingProfile
from cartwise.retrieval import RankedHit, RankRequest, applied_lexical_weight, served_retrieval
from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from cartwise.v1 import search_pb2_grpc as pb_grpc
from encoders.batching import QueryBatcher
from encoders.runtime import ActiveModel, ServingModel
from grpc_api.admission import AdaptiveLimit
from grpc_api.impressions import ImpressionLog, impression_of
from grpc_api.validation import (
    WIRE_OF_RETRIEVAL,
    InvalidRequest,
    SearchQuery,
    SimilarQuery,
    validate_recommend,
    validate_search,
    validate_similar,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class _User:
    vector: np.ndarray | None = None
    n: int = 0
    purchased: tuple[str, ...] = ()


class SearchServicer(pb_grpc.SearchServiceServicer):
    """Search, Recommend and SimilarProducts. Each request takes one :class:`ServingModel` snapshot, so its query vector,
    user vector and product collection always come from the same version.

    Admission: at most ``admission.limit`` requests are worked on at once, a limit that follows their
    latency (grpc_api/admission.py) between ``settings.min_in_flight`` and ``settings.max_in_flight``; one
    more is refused at once with RESOURCE_EXHAUSTED (counted in ``rejected``) rather than queued, so under
    overload the answered requests keep their latency and the rest fail fast for the client to retry or shed.

    ``index`` is read asynchronously (cartwise.index.open_reader). A collection of the snapshot that is
    missing (dropped under the request, or never built) answers UNAVAILABLE naming it, and so does an
    index server that does not answer: the index, not the request, is at fault, and a retry may succeed.

    Every answer gets a ``request_id``; with ``impressions`` what it showed is published
    (grpc_api/impressions.py), for the trainer to learn from what was shown and not taken."""

    def __init__(self, settings: Settings, index: AsyncVectorIndex, active: ActiveModel,
                 batcher: QueryBatcher, impressions: ImpressionLog | None = None) -> None:
        self.settings, self.index, self.active, self.batcher = settings, index, active, batcher
        self.impressions = impressions
        self.profile = RankingProfile.from_settings(settings.lexical)
        self.lexical = LexicalEncoder(self.profile)
        self.pages = Pages(index, self.profile, settings.hnsw_ef)
        self.admission = AdaptiveLimit(settings.min_in_flight, settings.max_in_flight, settings.admission_tolerance)
        self.rejected = 0

    @property
    def in_flight(self) -> int:
        """Requests being worked on now."""
        return self.admission.in_flight

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        return await self._handle(context, lambda: validate_search(request, self.settings.max_query_chars),
                                  self._search)

    async def Recommend(self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        return await self._handle(context, lambda: validate_recommend(request), self._recommend)

    async def SimilarProducts(self, request: pb.SimilarProductsRequest,
                              context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        return await self._handle(context, lambda: validate_similar(request), self._similar)

    async def _handle(self, context, validate, answer) -> pb.SearchResponse:
        """Validate, admit, and ``answer(query, model snapshot, context)`` within the call's deadline."""
        try:
            query = validate()
        except InvalidRequest as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:  # it waited out its deadline before reaching us
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before admission")
        admitted, no_load = self.admission.try_acquire()
        if not admitted:
            self.rejected += 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"overloaded: {self.in_flight} requests in flight (the adaptive admission limit)")
        started, dropped = time.perf_counter(), False
        try:
            response = await asyncio.wait_for(answer(query, self.active.current, context), remaining)
            response.request_id = uuid.uuid4().hex
            if self.impressions is not None:
                self.impressions.record(impression_of(query, response))
            return response
        except asyncio.TimeoutError:
            dropped = True
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while searching")
        finally:
            self.admission.release(time.perf_counter() - started, no_load, dropped)

    async def _user(self, model: ServingModel, user_id: str, context) -> _User:
        if not user_id:
            return _User()
        async with _collection_of(model.users, context):
            found = await self.index.retrieve(model.users, [point_id(user_id)], with_vectors=True)
        if not found:
            return _User()
        point = UserPoint.from_payload(found[0].payload, found[0].vector)
        return _User(point.state.vector, point.state.n, point.purchased)

    def _alpha(self, user: _User, requested: float | None) -> float:
        """α applied to the user's vector: the request's, else α(n); 0 without a user vector."""
        if user.vector is None:
            return 0.0
        return requested if requested is not None else personalization_weight(user.n, self.settings.personalization)

    async def _recommend(self, query: SearchQuery, model: ServingModel, context) -> pb.SearchResponse:
        return await self._search(query, model, context)

    async def _search(self, query: SearchQuery, model: ServingModel, context) -> pb.SearchResponse:
        user = await self._user(model, query.user_id, context)
        qvec = await self.batcher.encode(model, query.query) if query.query else None
        alpha = self._alpha(user, query.personalization_weight)
        if qvec is None:
            if user.vector is None:  # a shopper with no history and no query: cold start
                return await self._popular(query, model, context)
            alpha = 1.0  # ranking by the user alone: score = <û, p̂>
        flt = query.filter
        if query.exclude_purchased and user.purchased:
            flt = dataclasses.replace(flt, exclude_ids=frozenset(point_id(p) for p in user.purchased))
        request = RankRequest(qvec, self.lexical.query(query.query) if qvec is not None else None, user.vector, alpha,
                              query.retrieval, query.lexical_weight)
        spec = PageRequest(query.limit, flt, query.merchandising, query.collapse)
        async with _collection_of(model.groups, context):
            found = await self.pages.ranked(model.collections, request, spec)
        return self._response(found, model, request, user, "search" if qvec is not None else "personal")

    async def _similar(self, query: SimilarQuery, model: ServingModel, context) -> pb.SearchResponse:
        """Nearest products to the product's own (D,) vector p̂, tilted by α·û: scores ⟨p̂ + α·û, p⟩ (dense
        retrieval over the same text groups); the product itself, and with ``collapse`` its identical-text
        copies, left out."""
        async with _collection_of(model.products, context):
            found = await self.index.retrieve(model.products, [point_id(query.product_id)], with_vectors=True)
        if not found:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"product_id: {query.product_id!r} is not in the catalog")
        product = found[0].vector
        user = await self._user(model, query.user_id, context)
        request = RankRequest(product, None, user.vector, self._alpha(user, query.personalization_weight), "dense")
        own_text = {found[0].payload[TEXT_DIGEST]} if query.collapse and TEXT_DIGEST in found[0].payload else set()
        flt = dataclasses.replace(query.filter, exclude_ids=query.filter.exclude_ids | {found[0].id},
                                  exclude_texts=query.filter.exclude_texts | own_text)
        spec = PageRequest(query.limit, flt, query.merchandising, query.collapse)
        async with _collection_of(model.groups, context):
            similar = await self.pages.ranked(model.collections, request, spec)
        return self._response(similar, model, request, user, "similar")

    async def _popular(self, query: SearchQuery, model: ServingModel, context) -> pb.SearchResponse:
        """The most popular products within the request's filter (:meth:`cartwise.page.Pages.popular`)."""
        spec = PageRequest(query.limit, query.filter, query.merchandising, query.collapse)
        async with _collection_of(model.products, context):
            popular = await self.pages.popular(model.collections, spec)
        return self._response(popular, model, POPULAR, _User(), "popular")

    def _response(self, page: Page, model: ServingModel, request: RankRequest, user: _User,
                  strategy: str) -> pb.SearchResponse:
        facets = page.facets
        return pb.SearchResponse(hits=[_hit(h) for h in page.hits], model_version=model.version,
                                 index_version=model.products, personalization_weight=request.alpha,
                                 user_interactions=user.n, retrieval=WIRE_OF_RETRIEVAL[served_retrieval(request)],
                                 lexical_weight=applied_lexical_weight(request, self.profile),
                                 strategy=strategy, facets=_facets(facets) if facets is not None else None)


@asynccontextmanager
async def _collection_of(name: str, context) -> AsyncIterator[None]:
    """Abort with UNAVAILABLE when the index says collection ``name`` is missing (KeyError) or does not
    answer (IndexUnavailable): the index, not the request, is at fault, and a retry may succeed."""
    try:
        yield
    except KeyError:
        log.error("collection %s of the served version is missing", name)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"collection {name!r} missing")
    except IndexUnavailable as err:
        log.error("index unavailable: %s", err)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"index unavailable: {err}")


def _facets(counts: FacetCounts) -> pb.Facets:
    return pb.Facets(categories=[pb.FacetCount(value=v, count=n) for v, n in counts.categories],
                     brands=[pb.FacetCount(value=v, count=n) for v, n in counts.brands],
                     price_bands=[pb.PriceBand(min=b.low, max=b.high, count=b.count) for b in counts.price_bands],
                     candidates=counts.candidates)


def _hit(ranked: RankedHit) -> pb.Hit:
    product = ProductView.from_payload(ranked.hit.payload)
    return pb.Hit(product_id=product.product_id, title=product.title, category_path=product.category_path,
                  brand=product.brand, price=product.price, in_stock=product.in_stock, score=ranked.hit.score,
                  semantic_score=ranked.semantic, personal_score=ranked.personal, lexical_score=ranked.lexical)
