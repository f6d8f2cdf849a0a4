"""A version with a distilled query tower serves Search once swapped in: the swap moves both towers, the API
embeds the query with the version's query.onnx and ranks the products the stream worker embedded with its
model.onnx (real ONNX graphs, real broker, Qdrant Edge and gRPC)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timezone

import numpy as np
import pytest
import pytest_asyncio

from cartwise.catalog import product_text
from cartwise.client import AsyncClient
from cartwise.events import ProductUpsert, encode_event
from cartwise.lifecycle import request_swap
from cartwise.registry import MODEL_FILE, QUERY_TOWER_FILE, TOKENIZER_FILE, ModelRegistry
from cartwise.v1 import search_pb2 as pb
from encoders.export import export_verified
from encoders.model import DualEncoder
from encoders.runtime import OnnxEncoder
from tests.support import eventually, running_service
from trainer.assembly import tokenizer_path
from trainer.distill import make_student

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TITLE, BRAND, CATEGORY = "Stainless steel electric kettle 1.7 l", "Brevo", ["kitchen", "kettles"]


@pytest.fixture(scope="module")
def distilled_registry(registry_dir, tmp_path_factory):
    """The test registry (v1 active) plus the candidate v2: v1's product tower with a 2-layer query tower
    made from v1's layers (untrained: what a distilled tower is, structurally, and it embeds unlike the
    product tower)."""
    models = tmp_path_factory.mktemp("towers") / "models"
    shutil.copytree(registry_dir, models)
    registry = ModelRegistry(models)
    staging = registry.staging_dir()
    for name in (MODEL_FILE, TOKENIZER_FILE):
        shutil.copyfile(registry.path("v1") / name, staging / name)
    (staging / "student").mkdir()
    export_verified(make_student(DualEncoder.pretrained(), 2), staging / "student", tokenizer_path(), 128)
    (staging / "student" / MODEL_FILE).rename(staging / QUERY_TOWER_FILE)
    shutil.rmtree(staging / "student")
    v1 = registry.manifest("v1")
    manifest = registry.publish(staging, dims=v1.dims, base=v1.base, max_tokens=v1.max_tokens,
                                config={"product_tower_of": "v1"})
    assert manifest.version == "v2" and manifest.distilled and registry.active() == "v1"
    return models


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(tmp_path_factory, distilled_registry, broker):
    kettle = ProductUpsert(event_id="kettle-0", event_time=datetime(2026, 1, 1, tzinfo=timezone.utc),
                           product_id="it-kettle", title=TITLE, brand=BRAND, category_path=CATEGORY, price=30.0)
    async with running_service(tmp_path_factory.mktemp("data"), distilled_registry, broker,
                               messages=[("catalog", b"it-kettle", encode_event(kettle))]) as svc:
        yield svc


def semantic(version_dir, query_file: str, query: str) -> float:
    """<query by ``query_file``, the kettle by the version's product tower>."""
    product = OnnxEncoder(version_dir).encode([product_text(TITLE, BRAND, CATEGORY)])[0]
    vector = OnnxEncoder(version_dir, model_file=query_file).encode([query])[0]
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    return float(vector @ product)


async def test_a_swap_moves_both_towers_and_search_embeds_queries_with_the_query_tower(service, distilled_registry):
    async with AsyncClient(f"127.0.0.1:{service.port}") as client:
        async def kettle(version: str):
            response = await client.search("electric kettle", limit=5, retrieval=pb.RETRIEVAL_DENSE)
            hits = [h for h in response.hits if h.product_id == "it-kettle"]
            return (response, hits[0]) if hits and response.model_version == version else None

        before, hit = await eventually(lambda: kettle("v1"))
        full = semantic(distilled_registry / "v1", MODEL_FILE, "electric kettle")
        assert hit.semantic_score == pytest.approx(full, abs=2e-3)
        await asyncio.to_thread(request_swap, service.settings, "v2", "test: distilled query tower")
        after, hit = await eventually(lambda: kettle("v2"), timeout_s=120)
    assert after.index_version == "products_v2"  # the v2 collections, backfilled by v2's product tower
    tower = semantic(distilled_registry / "v2", QUERY_TOWER_FILE, "electric kettle")
    assert hit.semantic_score == pytest.approx(tower, abs=2e-3)
    assert abs(full - tower) > 0.01  # so the score could only come from the query tower
