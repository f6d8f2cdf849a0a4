"""Pure logic of incremental cycles: event queries, MMSE stage groups, behavior config, watermarks."""

from datetime import datetime, timezone

from cartwise.events import BehaviorEvent, Impression, ProductUpsert
from trainer.config import TrainConfig
from trainer.incremental import (
    EventLog,
    Watermark,
    behavior_config,
    behavior_queries,
    event_query,
)

T = datetime(2019, 10, 1, tzinfo=timezone.utc)


def product(pid: str, path: list[str]) -> ProductUpsert:
    return ProductUpsert(event_id=f"c-{pid}", event_time=T, product_id=pid, title=pid, category_path=path)


def behavior(kind: str, user: str, pid: str, query: str | None = None) -> BehaviorEvent:
    return BehaviorEvent(event_id=f"{kind}-{user}-{pid}", event_time=T, event_type=kind, user_id=user,
                         product_id=pid, query=query)


def test_event_query_prefers_the_search_text_then_the_leaf():
    phone = product("p1", ["electronics", "smart_phone"])
    assert event_query(behavior("view", "u", "p1", query="cheap phone"), phone) == "cheap phone"
    assert event_query(behavior("view", "u", "p1"), phone) == "smart phone"
    assert event_query(behavior("view", "u", "p1"), product("p1", [])) is None


def test_groups_keep_the_strongest_stage_per_user_and_query():
    catalog = {p: product(p, ["electronics", "smartphone"]) for p in ("a", "b")}
    catalog["c"] = product("c", [])
    events = [behavior("view", "u1", "a"), behavior("cart", "u1", "a"), behavior("view", "u1", "b"),
              behavior("purchase", "u2", "b"), behavior("view", "u2", "c")]
    groups = behavior_queries(EventLog(catalog, events, Watermark()), {"a": 0, "b": 1, "c": 2})
    assert sorted((g.text, sorted(g.judged.items())) for g in groups) == [
        ("smartphone", [(0, 3.0), (1, 2.0)]), ("smartphone", [(1, 4.0)])]


def test_the_answer_an_event_names_adds_its_other_products_as_shown():
    catalog = {p: product(p, ["electronics", "smartphone"]) for p in "abcd"}
    answer = Impression(event_id="r1", event_time=T, user_id="u1", query="cheap phone", strategy="search",
                        model_version="v1", product_ids=["a", "b", "c", "gone"])
    similar = Impression(event_id="r2", event_time=T, user_id="u2", similar_to="a", strategy="similar",
                         model_version="v1", product_ids=["a", "d"])
    events = [behavior("cart", "u1", "b").model_copy(update={"request_id": "r1"}),
              behavior("view", "u1", "a", query="cheap phone"),
              behavior("cart", "u2", "d").model_copy(update={"request_id": "r2"})]
    log_ = EventLog(catalog, events, Watermark(), impressions={"r1": answer, "r2": similar})
    groups = behavior_queries(log_, {p: i for i, p in enumerate("abcd")})
    assert sorted((g.text, sorted(g.judged.items())) for g in groups) == [
        ("cheap phone", [(0, 2.0), (1, 3.0), (2, 1.0)]),  # the query of the answer; c shown, not taken
        ("smartphone", [(3, 3.0)])]  # an answer without a query shows nothing for the leaf's group


def test_behavior_defaults_sit_under_what_the_caller_chose():
    config = behavior_config(TrainConfig(steps=7, roar_weight=0.3))
    assert (config.loss, config.positive_grade, config.dataset) == ("mmse", 3.0, "kafka")
    assert (config.steps, config.roar_weight) == (7, 0.3)


def test_watermark_round_trips_through_the_manifest_form():
    mark = Watermark({"behavior.carts": {0: 12, 1: 3}}, "2019-10-01T02:00:00+00:00")
    again = Watermark.parse(mark.to_json())
    assert again.offsets == mark.offsets and again.event_time == mark.event_time
    assert Watermark.parse({"source": "homedepot", "judgments_sha256": "x"}) is None
