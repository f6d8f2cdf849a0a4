"""Training end to end on a slice of the real Home Depot data: taxonomy assignment, TB-HNS training with
the masked InfoNCE + ROAR, checkpoint resume, registry publication (ONNX verified against torch) and
`cartwise eval --model latest` on the published version."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cartwise.app.cli import main
from cartwise.registry import ModelRegistry
from cartwise.settings import Settings
from encoders.runtime import OnnxEncoder
from trainer import loop
from trainer.config import TrainConfig
from trainer.driver import train_homedepot
from trainer.evaluation.homedepot import catalog_texts, embed, load_homedepot
from trainer.evaluation.run import PRETRAINED, resolve_model
from trainer.taxonomy.assign import (
    GoogleTaxonomy,
    assign,
    assignment_path,
    category_vectors,
    write_assignments,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TINY = dict(steps=6, batch_size=8, val_every=2, val_queries=10, val_distractors=200, warmup_steps=1,
            curriculum_steps=4, patience=10)


@pytest.fixture(scope="module")
def settings(tmp_path_factory, registry_dir, slice_files):
    """Settings on a scratch data dir whose registry holds the pretrained v1 and a taxonomy for the slice."""
    data_dir = tmp_path_factory.mktemp("train")
    shutil.copytree(registry_dir, data_dir / "models")
    settings = Settings(data_dir=data_dir)
    registry = ModelRegistry(settings.models_dir)
    version = resolve_model(registry, PRETRAINED)
    encoder = OnnxEncoder(registry.path(version), 128, threads=2)
    ids, texts = catalog_texts(load_homedepot(slice_files.judgments, slice_files.products))
    taxonomy = GoogleTaxonomy.load()
    categories = category_vectors(taxonomy, lambda t: embed(encoder, t, "categories"))
    assignments = assign(ids, embed(encoder, texts, "products"), taxonomy, categories)
    write_assignments(assignments, assignment_path(data_dir, "homedepot"))
    return settings


def test_train_publishes_a_verified_version_that_eval_latest_scores(settings, slice_files):
    config = TrainConfig(negatives="tbhns", **TINY)
    outcome = train_homedepot(settings, config, publish=True, judgments=slice_files.judgments,
                              products=slice_files.products)
    manifest = outcome.manifest
    assert manifest.version == "v2" and manifest.config["trained"] is True
    assert manifest.config["negatives"] == "tbhns" and manifest.config["export_max_abs_diff"] < 1e-4
    assert len(manifest.config["watermark"]["judgments_sha256"]) == 64
    assert manifest.metrics["homedepot_val"]["ndcg@10"] == pytest.approx(outcome.val_metrics["ndcg@10"])
    assert [p.step for p in outcome.result.history] == [0, 2, 4, 6]
    assert outcome.result.best_step in (0, 2, 4, 6)
    # pretrained still resolves to the untrained export, latest to the new version
    registry = ModelRegistry(settings.models_dir)
    assert resolve_model(registry, PRETRAINED) == "v1" and resolve_model(registry, "latest") == "v2"

    result = CliRunner().invoke(main, ["eval", "--dataset", "homedepot", "--judgments", str(slice_files.judgments),
                                       "--products", str(slice_files.products), "--split", "all",
                                       "--model", "latest", "--json"], env={"CARTWISE_DATA_DIR": str(settings.data_dir)})
    assert result.exit_code == 0, result.output
    assert '"version": "v2"' in result.output


def test_a_crashed_run_resumes_to_the_same_weights(settings, slice_files, monkeypatch):
    config = TrainConfig(negatives="random", **TINY)
    straight = train_homedepot(settings, config, run_name="straight", publish=False,
                               judgments=slice_files.judgments, products=slice_files.products)

    real_step = loop.Trainer._train_step

    def crash_at_step_3(self, order):
        if self.step == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_step(self, order)

    monkeypatch.setattr(loop.Trainer, "_train_step", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_homedepot(settings, config, run_name="crashed", publish=False,
                        judgments=slice_files.judgments, products=slice_files.products)
    monkeypatch.setattr(loop.Trainer, "_train_step", real_step)
    resumed = train_homedepot(settings, config, run_name="crashed", resume=True, publish=False,
                              judgments=slice_files.judgments, products=slice_files.products)
    assert [p.step for p in resumed.result.history] == [0, 2, 4, 6]
    assert resumed.val_metrics["ndcg@10"] == pytest.approx(straight.val_metrics["ndcg@10"], abs=1e-6)
    a = torch.load(settings.data_dir / "runs" / "straight" / loop.CHECKPOINT, weights_only=False)["model"]
    b = torch.load(settings.data_dir / "runs" / "crashed" / loop.CHECKPOINT, weights_only=False)["model"]
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)


def test_resume_refuses_another_configuration(settings, slice_files):
    with pytest.raises(ValueError, match="another configuration"):
        train_homedepot(settings, TrainConfig(negatives="random", **{**TINY, "lr": 1e-3}), run_name="straight",
                        resume=True, publish=False, judgments=slice_files.judgments, products=slice_files.products)
