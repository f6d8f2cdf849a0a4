"""int8 copies of a registry version's encoder: ONNX Runtime's dynamic quantization of the MatMul weights,
per output channel (activations are quantized on the fly).

Why: on two CPU cores the encoder is what a catalog upsert, a swap's re-embedding and a query spend most
of their CPU on. Measured on the REES46 catalog texts (issue #13, one thread): fp32 2.95 ms CPU per
product, int8 1.67 ms; embeddings keep a cosine of 0.992 on average (0.981 at worst) to fp32's.
Quantizing every weight per tensor was faster (1.5 ms) but drifted further (mean cosine 0.957), so only
MatMuls are quantized, per channel. A quantized version is an ordinary registry version: it is evaluated
(``cartwise eval``) and activated (``cartwise models activate``) like any other, and keeps its source's
torch weights, so training continues from full precision."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from cartwise.registry import MODEL_FILE, TOKENIZER_FILE, WEIGHTS_FILE, Manifest, ModelRegistry
from cartwise.settings import Precision

log = logging.getLogger(__name__)
# quantize_dynamic warns on the root logger that the model was not pre-processed (shape inference and
# graph optimisation for image models); the encoder's export already runs shape inference, so it is noise.
PRE_PROCESSING_ADVICE = "Please consider to run pre-processing before quantization"
QUANTIZATION = "int8 dynamic, per-channel MatMul weights (onnxruntime.quantization.quantize_dynamic)"


def served_copy(registry: ModelRegistry, version: str, precision: Precision) -> str:
    """The version to serve for ``version`` at ``precision``: ``version`` itself for "fp32" or when it is int8
    already (an int8 copy, or one with a distilled query tower made from one); else its int8 copy, the one
    already in the registry or a new one published now (a few seconds)."""
    if precision == "fp32" or "quantization" in registry.manifest(version).config:
        return version
    existing = [v for v in registry.versions() if registry.manifest(v).config.get("quantized_from") == version]
    return existing[0] if existing else publish_quantized(registry, version).version


def publish_quantized(registry: ModelRegistry, version: str) -> Manifest:
    """Publish an int8 copy of ``version`` as the registry's next version (manifest config:
    ``quantized_from``, ``quantization``). Raises cartwise.registry.RegistryError for a missing or corrupt
    ``version``."""
    source, source_dir = registry.verify(version), registry.path(version)
    staging = registry.staging_dir()
    try:
        quantize_file(source_dir / MODEL_FILE, staging / MODEL_FILE)
        for name in (TOKENIZER_FILE, WEIGHTS_FILE):
            if (source_dir / name).exists():
                shutil.copyfile(source_dir / name, staging / name)
        manifest = registry.publish(staging, dims=source.dims, base=source.base, max_tokens=source.max_tokens,
                                    config={**source.config, "quantized_from": version, "quantization": QUANTIZATION})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("published %s: %s of %s", manifest.version, QUANTIZATION, version)
    return manifest


def quantize_file(source: Path, target: Path) -> None:
    """Write the int8 copy (:data:`QUANTIZATION`) of the ONNX graph ``source`` to ``target``.
    Raises what onnxruntime.quantization raises for an unreadable graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropMessage(PRE_PROCESSING_ADVICE)
    logging.root.addFilter(advice)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    finally:
        logging.root.removeFilter(advice)


class _DropMessage(logging.Filter):
    """Drops records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
