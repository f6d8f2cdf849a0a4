"""Shared fixtures. Integration tests run the real embedded broker (Tansu), Qdrant Edge, the ONNX encoder
and gRPC over loopback; the exported pretrained encoder is built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def registry_dir(tmp_path_factory):
    """A model registry holding the exported pretrained encoder (v1, active)."""
    from cartwise.registry import ModelRegistry
    from cartwise.service import ensure_active_model

    root = tmp_path_factory.mktemp("models")
    ensure_active_model(ModelRegistry(root))
    return root
