"""How the service and the benchmarks use a user's registry: a first start activates the pretrained
export that is already there, and a benchmark serves copies, leaving the user's registry as it was."""

from __future__ import annotations

import shutil

import pytest

from cartwise.app.bench.common import copy_versions, served_version
from cartwise.app.service import ensure_active_model
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_first_start_activates_the_existing_pretrained_export(registry_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(registry_dir, models)
    for name in ("ACTIVE", "lifecycle.json"):  # as after `cartwise train` on a fresh checkout
        (models / name).unlink(missing_ok=True)
    registry = ModelRegistry(models)
    assert registry.active() is None
    assert ensure_active_model(registry, "fp32") == "v1"
    assert registry.versions() == ["v1"] and registry.active() == "v1"


def test_first_start_serves_the_int8_copy_of_the_pretrained_export_by_default(registry_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(registry_dir, models)
    for name in ("ACTIVE", "lifecycle.json"):
        (models / name).unlink(missing_ok=True)
    registry = ModelRegistry(models)
    assert Settings().encoder_precision == "int8"
    assert ensure_active_model(registry) == "v2" == registry.active()
    assert registry.manifest("v2").config["quantized_from"] == "v1"
    for name in ("ACTIVE", "lifecycle.json"):  # a later first start finds the copy instead of making another
        (models / name).unlink(missing_ok=True)
    assert ensure_active_model(registry) == "v2" and registry.versions() == ["v1", "v2"]


def test_a_benchmark_serves_copies_and_never_writes_the_users_registry(registry_dir, tmp_path):
    user = tmp_path / "user-models"
    shutil.copytree(registry_dir, user)
    before = snapshot(user)
    version = served_version(user)
    copy_versions(user, [version], tmp_path / "scratch" / "models")
    scratch = ModelRegistry(tmp_path / "scratch" / "models")
    assert version == "v1" and scratch.active() == "v1" and scratch.verify("v1").version == "v1"
    assert snapshot(user) == before
    assert served_version(tmp_path / "nothing-here") is None and not (tmp_path / "nothing-here").exists()
