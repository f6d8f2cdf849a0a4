"""Encoders: model definitions (torch), ONNX export, and ONNX Runtime inference with batching and hot reload.

Serving imports only :mod:`encoders.runtime`, :mod:`encoders.batching` (with its query cache) and
:mod:`encoders.bulk` (onnxruntime + tokenizers);
torch and transformers load only for export and training."""

from encoders.batching import QueryBatcher
from encoders.runtime import ActiveModel, OnnxEncoder, ServingModel, available_providers

__all__ = ["ActiveModel", "OnnxEncoder", "QueryBatcher", "ServingModel", "available_providers"]
