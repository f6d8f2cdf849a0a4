"""ONNX export of a :class:`encoders.model.DualEncoder` into the model registry, verified against torch."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np

from cartwise.registry import (
    MODEL_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    Manifest,
    ModelRegistry,
)
from encoders.runtime import OnnxEncoder

log = logging.getLogger(__name__)

VERIFY_TEXTS = ("cordless drill", "samsung smartphone 128gb",
                "Alisha Solid Women's Cycling Shorts. brand: Alisha. category: Clothing > Women's Clothing")


class ExportMismatch(RuntimeError):
    """The exported graph disagrees with the torch model beyond tolerance."""


def export_onnx(model, out_path: Path, opset: int = 17) -> None:
    """Write ``model`` ((B, T) ids, (B, T) mask -> (B, D)) as ONNX with dynamic batch and length."""
    import torch

    model = model.eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
               "embeddings": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on HF control flow; verify_export checks the result
        torch.onnx.export(model, (ids, torch.ones_like(ids)), str(out_path), input_names=["input_ids", "attention_mask"],
                          output_names=["embeddings"], dynamic_axes=dynamic, opset_version=opset, dynamo=False)


def verify_export(model, model_dir: Path, max_tokens: int, atol: float = 1e-4) -> float:
    """Max abs difference between torch and ONNX Runtime embeddings of :data:`VERIFY_TEXTS`, one text at a
    time so both see identical unpadded inputs. Raises ExportMismatch above ``atol``."""
    import torch

    onnx = OnnxEncoder(model_dir, max_tokens=max_tokens, providers=["CPUExecutionProvider"])
    worst = 0.0
    for text in VERIFY_TEXTS:
        enc = onnx.tokenizer.encode(text)
        ids = torch.tensor([enc.ids])
        with torch.no_grad():
            reference = model.eval()(ids, torch.ones_like(ids)).numpy()
        worst = max(worst, float(np.abs(onnx.encode([text]) - reference).max()))
    if worst > atol:
        raise ExportMismatch(f"ONNX differs from torch by {worst:.2e} (> {atol:.0e})")
    return worst


def export_verified(model, directory: Path, tokenizer_file: Path, max_tokens: int) -> float:
    """Write ``model`` as ``directory``/model.onnx beside a copy of ``tokenizer_file`` (what
    encoders.runtime.OnnxEncoder loads) and return the torch/ONNX max abs difference. Raises ExportMismatch."""
    export_onnx(model, directory / MODEL_FILE)
    shutil.copyfile(tokenizer_file, directory / TOKENIZER_FILE)
    return verify_export(model, directory, max_tokens)


def publish_model(registry: ModelRegistry, model, tokenizer_file: Path, base: str, max_tokens: int = 128,
                  metrics: dict | None = None, config: dict | None = None) -> Manifest:
    """Export, verify and publish ``model`` (ONNX for serving, its torch weights for further training)
    as the registry's next version. Raises ExportMismatch."""
    import torch

    staging = registry.staging_dir()
    try:
        diff = export_verified(model, staging, tokenizer_file, max_tokens)
        torch.save(model.state_dict(), staging / WEIGHTS_FILE)
        dims = int(model(*(_probe_inputs())).shape[-1])
        manifest = registry.publish(staging, dims=dims, base=base, max_tokens=max_tokens, metrics=metrics,
                                    config={**(config or {}), "projection_dim": model.projection_dim,
                                            "export_max_abs_diff": diff})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("published %s (%d-d, torch/ONNX max abs diff %.1e)", manifest.version, manifest.dims, diff)
    return manifest


def _probe_inputs():
    import torch

    ids = torch.ones(1, 4, dtype=torch.long)
    return ids, torch.ones_like(ids)


def find_pretrained(registry: ModelRegistry) -> str | None:
    """The registry's pretrained MiniLM-L6 as published (its oldest untrained version), or None."""
    from encoders.model import PRETRAINED_NAME

    return next((v for v in registry.versions()
                 if registry.manifest(v).base == PRETRAINED_NAME and not registry.trained(v)), None)


def pretrained_version(registry: ModelRegistry) -> str:
    """:func:`find_pretrained`, exported and published now (about 10 s) only when the registry holds none."""
    return find_pretrained(registry) or publish_pretrained(registry).version


def publish_pretrained(registry: ModelRegistry) -> Manifest:
    """Publish the pretrained MiniLM-L6 (mean pooling, no projection) as a registry version."""
    import torch

    from encoders.model import PRETRAINED_NAME, DualEncoder, pretrained_path

    model = DualEncoder.pretrained()
    with torch.no_grad():
        return publish_model(registry, model, pretrained_path() / TOKENIZER_FILE, base=PRETRAINED_NAME,
                             config={"pooling": "mean"})
