"""An int8 copy of a registry version (encoders/quantize.py) is a new candidate version that loads and
serves like any other, embeds close to its source, and keeps its source's torch weights."""

import shutil

import numpy as np
import pytest

from cartwise.app.bench.swap import fresh_copy, swap_pair
from cartwise.registry import WEIGHTS_FILE, ModelRegistry, RegistryError
from encoders.quantize import publish_quantized
from encoders.runtime import ServingModel

pytestmark = [pytest.mark.integration, pytest.mark.slow]
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


def test_bench_swap_swaps_to_the_users_pair_or_else_to_a_fresh_copy_of_the_served_source(registry_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(registry_dir, root)
    registry = ModelRegistry(root)
    source = registry.active()
    assert swap_pair(tmp_path / "none", None) is None  # no registry at all: the bench makes its own pair
    assert swap_pair(root, None) is None  # an active version and nothing else
    with pytest.raises(RegistryError):
        swap_pair(root, source)  # to the active version itself
    served = publish_quantized(registry, source).version
    registry.activate(served)
    copy = fresh_copy(root, served)
    assert copy not in (source, served) and registry.manifest(copy).config["quantized_from"] == source
    assert swap_pair(root, None) == (served, copy)  # the newest version that is not active
    assert swap_pair(root, source) == (served, source)
