"""Admission control in the servicer (pure logic: the ranking is stubbed): at most the admission limit's
requests are worked on, one more is refused with RESOURCE_EXHAUSTED at once, and a slot frees when one
finishes (the limit's controller: test_adaptive_limit.py)."""

import asyncio
from types import SimpleNamespace

import grpc
import pytest

from cartwise.settings import Settings
from cartwise.v1 import search_pb2 as pb
from grpc_api.admission import AdaptiveLimit
from grpc_api.servicer import SearchServicer


class Aborted(Exception):
    def __init__(self, code):
        self.code = code


class Context:
    def time_remaining(self):
        return 5.0

    async def abort(self, code, details):
        raise Aborted(code)


async def test_one_more_than_the_admission_limit_is_refused_at_once():
    servicer = SearchServicer.__new__(SearchServicer)
    settings = Settings(min_in_flight=2, max_in_flight=2)  # a limit that cannot move: 2
    servicer.settings, servicer.rejected = settings, 0
    servicer.admission = AdaptiveLimit(settings.min_in_flight, settings.max_in_flight, settings.admission_tolerance)
    servicer.active, servicer.impressions = SimpleNamespace(current=None), None
    release = asyncio.Event()

    async def slow_answer(query, model, context):
        await release.wait()
        return pb.SearchResponse(strategy="search")

    first = [asyncio.create_task(servicer._handle(Context(), lambda: "q", slow_answer)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Aborted) as refused:
        await asyncio.wait_for(servicer._handle(Context(), lambda: "q", slow_answer), 0.5)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and servicer.rejected == 1
    release.set()
    answered = await asyncio.gather(*first)
    assert [a.strategy for a in answered] == ["search", "search"] and servicer.in_flight == 0
    assert len({a.request_id for a in answered}) == 2  # each answer named on its own
    assert (await servicer._handle(Context(), lambda: "q", slow_answer)).strategy == "search"


class Expired(Context):
    def time_remaining(self):
        return -0.01


async def test_a_request_that_arrives_past_its_deadline_is_not_admitted():
    servicer = SearchServicer.__new__(SearchServicer)
    servicer.settings, servicer.rejected = Settings(), 0
    servicer.admission = AdaptiveLimit(2, 8, 2.0)

    async def answer(query, model, context):
        raise AssertionError("no work for a request its client has given up on")

    with pytest.raises(Aborted) as late:
        await servicer._handle(Expired(), lambda: "q", answer)
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.in_flight == 0 and servicer.admission.baseline_s is None and servicer.rejected == 0
