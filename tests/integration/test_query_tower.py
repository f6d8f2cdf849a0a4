"""A version with a distilled query tower serves Search: the API embeds the query with the version's
query.onnx and ranks the products the stream worker embedded with its model.onnx (real ONNX graphs,
real broker, Qdrant Edge and gRPC)."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import numpy as np
import pytest
import pytest_asyncio

from cartwise.catalog import product_text
from cartwise.client import AsyncClient
from cartwise.events import ProductUpsert, encode_event
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
    """The test registry plus v2: v1's product tower with a 2-layer query tower made from v1's layers
    (untrained: what a distilled tower is, structurally, and it embeds unlike the product tower), active."""
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
    assert manifest.version == "v2" and manifest.distilled
    registry.activate("v2")
    return models


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(tmp_path_factory, distilled_registry, broker):
    kettle = ProductUpsert(event_id="kettle-0", event_time=datetime(2026, 1, 1, tzinfo=timezone.utc),
                           product_id="it-kettle", title=TITLE, brand=BRAND, category_path=CATEGORY, price=30.0)
    async with running_service(tmp_path_factory.mktemp("data"), distilled_registry, broker,
                               messages=[("catalog", b"it-kettle", encode_event(kettle))]) as svc:
        yield svc


async def test_search_embeds_the_query_with_the_query_tower_and_products_with_the_product_tower(service,
                                                                                                distilled_registry):
    async with AsyncClient(f"127.0.0.1:{service.port}") as client:
        async def found():
            response = await client.search("electric kettle", limit=5, retrieval=pb.RETRIEVAL_DENSE)
            return response if any(h.product_id == "it-kettle" for h in response.hits) else None

        response = await eventually(found)
    assert response.model_version == "v2" and response.index_version == "products_v2"
    hit = next(h for h in response.hits if h.product_id == "it-kettle")
    version_dir = distilled_registry / "v2"
    query_tower = OnnxEncoder(version_dir, model_file=QUERY_TOWER_FILE).encode(["electric kettle"])[0]
    product_tower = OnnxEncoder(version_dir)
    product = product_tower.encode([product_text(TITLE, BRAND, CATEGORY)])[0]
    assert hit.semantic_score == pytest.approx(float(query_tower @ product), abs=2e-3)
    full = float(product_tower.encode(["electric kettle"])[0] @ product)
    assert abs(full - float(query_tower @ product)) > 0.01  # so the score above could only come from the query tower
    assert np.linalg.norm(query_tower) == pytest.approx(1.0, abs=1e-4)
