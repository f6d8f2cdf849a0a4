"""A version's two towers in the registry manifest (cartwise/registry.py): named with their sha256, verified
together, and read from manifests written before towers were named."""

import hashlib
import json

import pytest

from cartwise.registry import MANIFEST_FILE, PRODUCT, QUERY, Manifest, ModelRegistry, RegistryError


def stage(reg: ModelRegistry, model: bytes, query: bytes | None = None):
    staging = reg.staging_dir()
    (staging / "model.onnx").write_bytes(model)
    (staging / "tokenizer.json").write_text("{}")
    if query is not None:
        (staging / "query.onnx").write_bytes(query)
    return staging


def test_a_version_without_a_query_tower_embeds_queries_with_its_product_tower(tmp_path):
    reg = ModelRegistry(tmp_path)
    manifest = reg.publish(stage(reg, b"six layers"), dims=8, base="t", max_tokens=8)
    written = json.loads((reg.path("v1") / MANIFEST_FILE).read_text())
    digest = hashlib.sha256(b"six layers").hexdigest()
    assert written["towers"] == {PRODUCT: {"file": "model.onnx", "sha256": digest},
                                 QUERY: {"file": "model.onnx", "sha256": digest}}
    assert not manifest.distilled


def test_the_manifest_names_both_towers_with_their_sha256(tmp_path):
    reg = ModelRegistry(tmp_path)
    manifest = reg.publish(stage(reg, b"six layers", query=b"three layers"), dims=8, base="t", max_tokens=8)
    written = json.loads((reg.path("v1") / MANIFEST_FILE).read_text())
    assert written["towers"] == {PRODUCT: {"file": "model.onnx", "sha256": hashlib.sha256(b"six layers").hexdigest()},
                                 QUERY: {"file": "query.onnx", "sha256": hashlib.sha256(b"three layers").hexdigest()}}
    assert manifest.distilled and reg.manifest("v1") == manifest
    assert written["sha256"] == written["towers"][PRODUCT]["sha256"]  # the product tower, as before


def test_the_towers_digest_changes_with_either_tower(tmp_path):
    reg = ModelRegistry(tmp_path)
    plain = reg.publish(stage(reg, b"six"), dims=8, base="t", max_tokens=8)
    student = reg.publish(stage(reg, b"six", query=b"three"), dims=8, base="t", max_tokens=8)
    other = reg.publish(stage(reg, b"six", query=b"two"), dims=8, base="t", max_tokens=8)
    assert plain.sha256 == student.sha256 == other.sha256
    assert len({plain.towers_digest, student.towers_digest, other.towers_digest}) == 3


@pytest.mark.parametrize("altered", ["model.onnx", "query.onnx"])
def test_verify_checks_both_towers(tmp_path, altered):
    reg = ModelRegistry(tmp_path)
    reg.publish(stage(reg, b"six", query=b"three"), dims=8, base="t", max_tokens=8)
    assert reg.verify("v1").distilled
    (reg.path("v1") / altered).write_bytes(b"tampered")
    with pytest.raises(RegistryError, match=altered):
        reg.verify("v1")


def test_verify_refuses_a_missing_query_tower(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.publish(stage(reg, b"six", query=b"three"), dims=8, base="t", max_tokens=8)
    (reg.path("v1") / "query.onnx").unlink()
    with pytest.raises(RegistryError, match="query.onnx is missing"):
        reg.verify("v1")


def test_a_manifest_written_before_towers_were_named_has_one_tower_for_both():
    old = {"version": "v3", "dims": 384, "sha256": "ab" * 32, "created_at": "2026-11-01T00:00:00Z", "base": "t"}
    manifest = Manifest.model_validate_json(json.dumps(old))
    assert manifest.towers[PRODUCT] == manifest.towers[QUERY]
    assert manifest.towers[QUERY].file == "model.onnx" and manifest.towers[QUERY].sha256 == "ab" * 32
    assert not manifest.distilled


def test_a_distilled_version_is_not_distilled_again(tmp_path):
    from cartwise.settings import Settings
    from trainer.distill import DistillConfig
    from trainer.query_tower import publish_distilled

    settings = Settings(data_dir=tmp_path)
    reg = ModelRegistry(settings.models_dir)
    reg.publish(stage(reg, b"six", query=b"three"), dims=8, base="t", max_tokens=8)
    with pytest.raises(ValueError, match="distilled query tower already"):
        publish_distilled(settings, "v1", DistillConfig())
    assert reg.versions() == ["v1"]


def test_an_int8_version_with_a_distilled_query_tower_is_its_own_served_copy(tmp_path):
    from encoders.quantize import QUANTIZATION, served_copy

    reg = ModelRegistry(tmp_path)
    reg.publish(stage(reg, b"six", query=b"three"), dims=8, base="t", max_tokens=8,
                config={"quantization": QUANTIZATION, "product_tower_of": "v0"})
    assert served_copy(reg, "v1", "int8") == "v1" and reg.versions() == ["v1"]
