"""The simulator driver's pure parts (cartwise/app/simulation/driver.py): the plan, the events of a page's actions,
the summary."""

from __future__ import annotations

import random
from collections import Counter

from cartwise.app.simulation.catalog import SimCatalog
from cartwise.app.simulation.click_model import Actions
from cartwise.app.simulation.driver import (
    SearchOutcome,
    SimulationConfig,
    SimulationReport,
    behavior_records,
    plan,
)
from cartwise.app.simulation.shoppers import Shopper
from cartwise.client import Hit, Retrieval, SearchResult

CATALOG = SimCatalog([], {f"q{i}": {"p1": 3.0} for i in range(30)}, {}, False)


def _result(*pids: str) -> SearchResult:
    hits = tuple(Hit(pid, pid, (), "", 0.0, True, 1.0, 0.0, 1.0, 0.0) for pid in pids)
    return SearchResult(hits, "v1", "v1", 0.0, 0, Retrieval.HYBRID, 0.5, "search", "req123")


def test_the_plan_depends_on_the_seed_only_and_asks_catalog_queries():
    config = SimulationConfig(shoppers=4, searches=200)
    first = plan(config, CATALOG, random.Random(7))
    assert first == plan(config, CATALOG, random.Random(7)) != plan(config, CATALOG, random.Random(8))
    assert {query for _, query in first} <= set(CATALOG.qrels)
    assert {who for who, _ in first} == {0, 1, 2, 3}
    _, count = Counter(query for _, query in first).most_common(1)[0]
    assert count > 200 / 30  # a Zipf head: the most asked query beats a uniform share


def test_events_carry_the_query_and_request_id_in_funnel_order():
    shopper = Shopper("sim7-3", {}, {})
    records = behavior_records(shopper, "deck paint", _result("a", "b", "c"), Actions((1, 3), (3,), (3,)))
    assert [(r.topic_field, r.event.event_type, r.event.product_id) for r in records] == [
        ("views", "view", "a"), ("views", "view", "c"), ("carts", "cart", "c"), ("purchases", "purchase", "c")]
    for record in records:
        assert record.key == record.event.user_id == "sim7-3"
        assert record.event.query == "deck paint" and record.event.request_id == "req123"
    assert len({r.event.event_id for r in records}) == 4


def test_summary_counts_answers_errors_and_rate():
    outcomes = [SearchOutcome(0, "u", "q", "hybrid", "r0", "v1", ("a",), Actions((1,), (1,), ())),
                SearchOutcome(1, "u", "q", "dense", "r1", "v1", ("a",), Actions((), (), ())),
                SearchOutcome(2, "u", "q", "dense", error="RESOURCE_EXHAUSTED")]
    summary = SimulationReport(outcomes, 1.5, 1.0, 0, Counter(view=1, cart=1)).summary()
    assert summary["answered"] == 2 and summary["errors"] == 1
    assert summary["errors_by_status"] == {"RESOURCE_EXHAUSTED": 1}
    assert (summary["views"], summary["carts"], summary["purchases"]) == (1, 1, 0)
    assert summary["achieved_rate"] == 2.0
    assert summary["by_ranker"] == {"hybrid": {"answered": 1, "views": 1, "carts": 1, "purchases": 0},
                                    "dense": {"answered": 1, "views": 0, "carts": 0, "purchases": 0}}
