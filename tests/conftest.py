"""Shared fixtures. Integration tests run the real embedded broker (Tansu), Qdrant Edge, the ONNX encoder
and gRPC over loopback; the exported pretrained encoder is built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def registry_dir(tmp_path_factory):
    """A model registry holding the exported pretrained encoder (v1, active), full precision: tests compare
    vectors exactly (a first start serves its int8 copy, tests/integration/test_registry_use.py)."""
    from cartwise.app.service import ensure_active_model
    from cartwise.registry import ModelRegistry

    root = tmp_path_factory.mktemp("models")
    ensure_active_model(ModelRegistry(root), "fp32")
    return root


def rotated_registry(tmp_path_factory, registry_dir, seed: int):
    """A copy of ``registry_dir`` with v2 = v1 rotated by W (:func:`publish_rotated`). Returns (models dir, W)."""
    import shutil

    models = tmp_path_factory.mktemp("rotated") / "models"
    shutil.copytree(registry_dir, models)
    version, rotation = publish_rotated(models, seed=seed)
    assert version == "v2"
    return models, rotation


def publish_rotated(models_dir, seed: int = 0):
    """Publish the pretrained encoder followed by a random orthogonal projection W as the registry's next
    version: a genuinely different vector space (v_new = W v_old for every text) with the same rankings.
    Returns (version, W as a (D, D) float32 array)."""
    import torch

    from cartwise.registry import TOKENIZER_FILE, ModelRegistry
    from encoders.export import publish_model
    from encoders.model import PRETRAINED_NAME, DualEncoder, pretrained_path

    torch.manual_seed(seed)
    model = DualEncoder.pretrained(projection_dim=384)
    torch.nn.init.orthogonal_(model.projection.weight)
    with torch.no_grad():
        manifest = publish_model(ModelRegistry(models_dir), model, pretrained_path() / TOKENIZER_FILE,
                                 base=PRETRAINED_NAME, config={"rotation_seed": seed})
    return manifest.version, model.projection.weight.detach().numpy().astype("float32")
