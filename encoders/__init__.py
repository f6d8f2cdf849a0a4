"""Encoders: model definitions (torch), ONNX export, and ONNX Runtime inference with batching.

Serving imports only :mod:`encoders.runtime`, :mod:`encoders.batching` (with its query cache) and
:mod:`encoders.bulk` (onnxruntime + tokenizers);
torch and transformers load only for export and training."""
