"""`cartwise simulate`'s driver against the real service (embedded broker, stream worker, Qdrant Edge, ONNX
encoder, gRPC): it loads its Home Depot products through Kafka into a service that lacks them, its searches are
answered, and the events the click model draws reach the behavior topics with the query and the request id of
the answer acted on, and change the shoppers' personalization."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cartwise.app.simulation.catalog import homedepot_catalog
from cartwise.app.simulation.click_model import ClickParams
from cartwise.app.simulation.driver import SimulationConfig, simulate
from cartwise.client import AsyncClient
from cartwise.events import parse_behavior_event, parse_impression
from tests.support import eventually, read_all, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PRODUCTS = 120
# every view of a perfect product carted and bought: the three topics get events from a few searches
EAGER = ClickParams(cart_perfect=1.0, purchase_given_cart=1.0)


async def test_simulated_shoppers_search_and_their_events_carry_the_request_id(tmp_path, registry_dir):
    catalog = homedepot_catalog(tmp_path, PRODUCTS)
    config = SimulationConfig(shoppers=5, searches=24, rate=8.0, seed=3, click=EAGER)
    async with running_service(tmp_path / "data", registry_dir, embedded_kafka_storage="memory") as service:
        target = f"127.0.0.1:{service.port}"
        report = await simulate(service.settings, catalog, config, target=target)
        summary = report.summary()
        assert report.catalog_published == PRODUCTS
        assert summary["answered"] == 24 and summary["errors"] == 0, summary
        assert {o.query for o in report.outcomes} <= set(catalog.qrels)
        answers = {o.request_id: o for o in report.outcomes}
        assert all(o.product_ids and o.model_version for o in answers.values())

        settings = service.settings
        topics = {"view": settings.topics.views, "cart": settings.topics.carts, "purchase": settings.topics.purchases}
        for kind, topic in topics.items():
            events = [parse_behavior_event(r.value, kind) for r in await asyncio.to_thread(read_all, settings, topic)]
            assert len(events) == summary[f"{kind}s"] > 0, (kind, summary)
            for event in events:
                answer = answers[event.request_id]
                assert event.event_type == kind and event.query == answer.query
                assert event.user_id == answer.user_id and event.product_id in answer.product_ids

        # every answer acted on is on the impressions topic, with the products it showed
        async def impressions() -> dict[str, tuple[str, ...]]:
            records = await asyncio.to_thread(read_all, settings, settings.topics.impressions)
            shown = {i.request_id: tuple(i.product_ids) for i in map(parse_impression, (r.value for r in records))}
            return shown if answers.keys() <= shown.keys() else {}

        shown = await eventually(impressions, timeout_s=30, what="the impressions of every answer")
        assert all(shown[rid] == answer.product_ids for rid, answer in answers.items())

        # the service consumed them: a shopper who bought something now searches with a history
        buyer = next(o.user_id for o in report.outcomes if o.actions.purchases)
        async with AsyncClient(target, settings) as client:
            await eventually(lambda: _interactions(client, buyer), timeout_s=60, what=f"{buyer}'s history")

        again = await simulate(service.settings, catalog, replace(config, searches=4), target=target)
        assert again.catalog_published == 0  # the service holds the catalog now: nothing published twice


async def _interactions(client: AsyncClient, user_id: str) -> int:
    return (await client.search("paint", user_id=user_id)).user_interactions
