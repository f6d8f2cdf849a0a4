"""An int8 copy of a registry version (encoders/quantize.py) is a new candidate version that loads and
serves like any other, embeds close to its source, and keeps its source's torch weights."""

import shutil

import numpy as np

from cartwise.registry import WEIGHTS_FILE, ModelRegistry
from encoders.quantize import publish_quantized
from encoders.runtime import ServingModel

TEXTS = ["cordless drill with two batteries", "Samsung smartphone. brand: samsung. category: electronics > smartphone",
         "sofa", "stainless steel kitchen sink, undermount, 32 inch", "LED light bulb 60W equivalent soft white"]


def test_quantized_copy_is_a_candidate_that_embeds_close_to_its_source(registry_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(registry_dir, root)
    registry = ModelRegistry(root)
    source = registry.active()
    manifest = publish_quantized(registry, source)
    assert manifest.version != source and registry.active() == source  # published, not activated
    assert manifest.config["quantized_from"] == source and manifest.dims == registry.manifest(source).dims
    assert (registry.path(manifest.version) / WEIGHTS_FILE).exists() == (registry.path(source) / WEIGHTS_FILE).exists()
    full, int8 = (ServingModel.load(registry, v).encoder.encode(TEXTS) for v in (source, manifest.version))
    cosines = (full * int8).sum(axis=1)
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-4)
    assert cosines.min() > 0.95 and not np.allclose(full, int8, atol=1e-4)  # close, and really quantized
