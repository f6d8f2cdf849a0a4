"""The search playground end to end: the real service (embedded broker, worker, Qdrant Edge, ONNX, gRPC)
loaded with the first REES46 events, its HTTP API from an aiohttp client, and the page in headless Chromium
driven by Selenium."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from cartwise.app.service import Service
from cartwise.credentials import SecurityConfigError
from cartwise.datasets import rees46_records
from cartwise.settings import Settings
from tests.support import running_service
from trainer.incremental import read_event_log

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REES46_ROWS = 1500
TOKEN = "playground-test-token"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(tmp_path_factory, registry_dir):
    async with running_service(tmp_path_factory.mktemp("data"), registry_dir,
                               records=rees46_records(limit=REES46_ROWS), playground_port=0) as svc:
        yield svc


@pytest_asyncio.fixture(loop_scope="session")
async def http(service):
    async with aiohttp.ClientSession(f"http://127.0.0.1:{service.playground.port}") as session:
        yield session


async def test_the_user_picker_lists_real_users_with_a_history(http):
    async with http.get("/api/info") as response:
        info = await response.json()
    assert response.status == 200 and info["auth"] is False
    assert info["users"], "no users with a history after the REES46 replay"
    async with http.post("/api/search", json={"query": "", "user_id": info["users"][0]}) as response:
        answer = await response.json()
    assert response.status == 200, answer
    assert answer["user_interactions"] > 0 and answer["hits"]


async def test_a_search_answers_in_the_proto_json_mapping_with_every_score(http):
    async with http.post("/api/search", json={"query": "smartphone", "limit": 5,
                                              "retrieval": "RETRIEVAL_HYBRID"}) as response:
        answer = await response.json()
    assert response.status == 200, answer
    assert len(answer["hits"]) == 5 and answer["retrieval"] == "RETRIEVAL_HYBRID"
    assert {"lexical_score", "semantic_score", "personal_score", "category_path", "brand", "price"} <= set(answer["hits"][0])
    assert any(hit["lexical_score"] > 0 for hit in answer["hits"])


@pytest.mark.parametrize("body, field", [
    ({"query": "x", "limit": 5000}, "limit"),                 # the gRPC API's own validation
    ({"query": "x", "retrieval": "RETRIEVAL_NOPE"}, "retrieval"),  # the proto3 JSON parser's
    ({"query": "x", "no_such_field": 1}, "no_such_field"),
])
async def test_an_invalid_search_is_a_400_naming_the_field(http, body, field):
    async with http.post("/api/search", json=body) as response:
        answer = await response.json()
    assert response.status == 400 and field in answer["error"]


async def test_an_event_is_sent_through_kafka_marked_and_its_effect_timed(http, service):
    replayed_until = service.worker.clock.now  # REES46 is 2019: stamped now, the event would expire them all
    assert 0 < replayed_until < datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()
    user = f"playground-{uuid.uuid4().hex[:8]}"
    async with http.post("/api/search", json={"query": "smartphone", "limit": 10}) as response:
        product = (await response.json())["hits"][-1]["product_id"]
    async with http.post("/api/events", json={"event_type": "cart", "user_id": user, "product_id": product,
                                              "watch": {"query": "smartphone", "limit": 10}}) as response:
        answer = await response.json()
    assert response.status == 200, answer
    assert answer["visible"] and answer["elapsed_ms"] > 0
    assert answer["response"]["user_interactions"] == 1
    assert answer["response"]["hits"][0]["personal_score"] > 0
    log = await asyncio.to_thread(read_event_log, service.settings, None)
    assert not any(e.event_id == answer["event_id"] for e in log.behavior), "the trainer must leave it out"
    assert service.worker.clock.now == replayed_until and service.worker.behavior.expired == 0


@pytest.mark.parametrize("body, field", [
    ({"event_type": "view", "user_id": "u", "product_id": "p"}, "event_type"),
    ({"event_type": "cart", "user_id": "", "product_id": "p"}, "user_id"),
])
async def test_an_invalid_event_is_a_400_naming_the_field(http, body, field):
    async with http.post("/api/events", json=body) as response:
        answer = await response.json()
    assert response.status == 400 and field in answer["error"]


async def test_with_api_tokens_the_playground_needs_one(tmp_path, registry_dir):
    async with running_service(tmp_path, registry_dir, embedded_kafka_storage="memory", playground_port=0,
                               api_tokens=TOKEN) as svc:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{svc.playground.port}") as http:
            async with http.get("/") as page:
                assert page.status == 200  # the page holds no data
            async with http.post("/api/search", json={"query": "drill"}) as response:
                assert response.status == 401 and "bearer" in (await response.json())["error"]
            async with http.post("/api/search", json={"query": "drill"},
                                 headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 401
            async with http.post("/api/search", json={"query": "drill"},
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                assert response.status == 200, await response.text()


def test_a_non_loopback_playground_without_tokens_is_refused(tmp_path):
    settings = Settings(data_dir=tmp_path, playground_port=0, playground_host="0.0.0.0")
    with pytest.raises(SecurityConfigError, match="CARTWISE_API_TOKENS"):
        Service(settings)


def _browse(url: str, screenshot: Path) -> tuple[str, list[str], str, int, int]:
    """Search "smartphone" side by side with BM25 as an anonymous shopper, add a hit low on the page to the
    cart, and wait for the answer to change. Returns the carted hit's title, the titles after, the status
    line, the number of BM25 hits shown and of hits marked as moved up."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser()
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(url)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#user option")) > 1)
        driver.find_element(By.ID, "query").send_keys("smartphone")
        driver.find_element(By.CSS_SELECTOR, "details summary").click()
        driver.find_element(By.ID, "personal-weight").send_keys("10")
        driver.find_element(By.ID, "compare").click()
        driver.find_element(By.ID, "search").click()
        hits = lambda d, list_id="results": d.find_elements(By.CSS_SELECTOR, f"#{list_id} li.hit")  # noqa: E731
        wait.until(lambda d: len(hits(d)) == 10 and hits(d, "bm25-results"))
        titles = lambda d: [li.find_element(By.CLASS_NAME, "title").text for li in hits(d)]  # noqa: E731
        before = titles(driver)
        # the last hit whose text differs from the leader's, so that leading afterwards is a change
        target = max(k for k, title in enumerate(before) if title != before[0])
        hits(driver)[target].find_element(By.CSS_SELECTOR, "button.cart").click()
        wait.until(lambda d: "event" in d.find_element(By.ID, "status").text
                   and "sending" not in d.find_element(By.ID, "status").text)
        after = titles(driver)
        moved_up = len(driver.find_elements(By.CSS_SELECTOR, "#results li.moved-up"))
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(screenshot))
        return before[target], after, driver.find_element(By.ID, "status").text, len(hits(driver, "bm25-results")), moved_up
    finally:
        driver.quit()


def _page_and_refine(url: str) -> tuple[list[str], list[str], str, list[str]]:
    """Search "smartphone", turn to the next page, then click the first brand of the facet list. Returns the
    product ids of pages 1 and 2, the brand clicked and the brand lines of the hits after."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser()
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(url)
        driver.find_element(By.ID, "query").send_keys("smartphone")
        driver.find_element(By.ID, "search").click()
        info = lambda d: d.find_element(By.ID, "page-info").text  # noqa: E731
        shown = lambda d: d.find_elements(By.CSS_SELECTOR, "#results li.hit")  # noqa: E731
        ids = lambda d: [li.get_attribute("data-product-id") for li in shown(d)]  # noqa: E731
        wait.until(lambda d: info(d).startswith("1–") and d.find_elements(By.CSS_SELECTOR, "#facet-brands a"))
        first = ids(driver)
        driver.find_element(By.ID, "next").click()
        wait.until(lambda d: info(d).startswith("11–"))
        second = ids(driver)
        brand = driver.find_element(By.CSS_SELECTOR, "#facet-brands a")
        name = brand.text
        brand.click()
        wait.until(lambda d: info(d).startswith("1–") and driver.find_element(By.ID, "brands").get_attribute("value"))
        metas = [li.find_element(By.CLASS_NAME, "meta").text for li in shown(driver)]
        return first, second, name, metas
    finally:
        driver.quit()


def _browser():
    """Headless Chromium through its driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1100"):
        options.add_argument(argument)
    return webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=options)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="chromium and chromedriver not on PATH (`make test` installs Debian's chromium and "
                           "chromium-driver; apt-get was unavailable)")
async def test_in_a_browser_a_cart_click_brings_the_product_to_the_top(service, tmp_path):
    url = f"http://127.0.0.1:{service.playground.port}/"
    carted, after, status, bm25_hits, moved_up = await asyncio.to_thread(_browse, url, tmp_path / "playground.png")
    assert bm25_hits == 10
    assert "visible in the answer after" in status, status
    # the new shopper's vector is the carted product's: with α = 10 it (or a product of identical text, REES46
    # has many) leads, and the page marks what moved
    assert after[0] == carted and moved_up > 0
    assert (tmp_path / "playground.png").stat().st_size > 0


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver not on PATH (see above)")
async def test_in_a_browser_pages_turn_and_a_brand_facet_filters(service):
    url = f"http://127.0.0.1:{service.playground.port}/"
    first, second, brand, metas = await asyncio.to_thread(_page_and_refine, url)
    assert len(first) == len(second) == 10 and not set(first) & set(second)
    assert brand and metas and all(f" {brand} " in f" {meta.lower()} " for meta in metas), (brand, metas)
