"""Synchronous inference: ONNX signatures, the ONNX Runtime runner, postprocessing, batching, caching."""

from __future__ import annotations

from inferq.engine.batching import split, stack
from inferq.engine.cache import ModelCache
from inferq.engine.convert import convert_sklearn, load_sklearn_file
from inferq.engine.pipeline import predict
from inferq.engine.postprocess import to_predictions
from inferq.engine.runner import Runner
from inferq.engine.signature import read_signature

__all__ = [
    "ModelCache",
    "Runner",
    "convert_sklearn",
    "load_sklearn_file",
    "predict",
    "read_signature",
    "split",
    "stack",
    "to_predictions",
]
