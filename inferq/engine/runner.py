"""``Runner``: one ONNX Runtime session with its signature: load, run, close."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from inferq.contracts.models import ModelSignature
from inferq.engine.batching import check_rows
from inferq.engine.signature import first_line, read_signature
from inferq.errors import InferenceFailed, InvalidModel, ModelLoadFailed
from inferq.inputs import NUMPY_DTYPES, batch_size
from inferq.settings import EngineSettings

# NOTE: named explicitly; ORT also lists AzureExecutionProvider as available.
PROVIDERS = ["CPUExecutionProvider"]


class Runner:
    """A loaded model, ready to run validated feeds. ``run`` is thread-safe (ORT releases the GIL)."""

    __slots__ = ("_output_names", "_session", "signature")

    def __init__(self, session: Any, signature: ModelSignature) -> None:
        self._session: Any = session
        self._output_names = [spec.name for spec in signature.outputs]
        self.signature = signature

    @classmethod
    def load(cls, model: bytes, *, settings: EngineSettings) -> Runner:
        """Read the signature, build the session and warm it up with one batch-1 run on zeros.

        Raises ``InvalidModel`` for a bad or oversized file, ``ModelLoadFailed`` when ONNX Runtime
        cannot load or run it.
        """
        if len(model) > settings.max_model_bytes:
            raise InvalidModel(f"the model is {len(model):,} bytes, over the limit of {settings.max_model_bytes:,}")
        signature = read_signature(model)
        try:
            session = ort.InferenceSession(model, sess_options=session_options(settings), providers=PROVIDERS)
        except Exception as exc:
            raise ModelLoadFailed(f"ONNX Runtime could not load the model: {first_line(exc)}") from exc
        runner = cls(session, signature)
        try:
            runner.run(warm_up_feeds(signature))
        except InferenceFailed as exc:
            raise ModelLoadFailed(f"the model failed its warm-up run: {exc.message}") from exc
        return runner

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated feeds (a dict, as ``inputs.to_feeds`` returns); every output by name.

        ONNX Runtime errors, and outputs without one row per input row, raise ``InferenceFailed``.
        """
        try:
            values = self._session.run(self._output_names, feeds)
        except Exception as exc:
            if self._session is None:
                raise ModelLoadFailed("the model was closed; load it again") from None
            raise InferenceFailed(f"ONNX Runtime failed: {first_line(exc)}") from exc
        outputs = dict(zip(self._output_names, values, strict=True))
        check_rows(outputs, rows=batch_size(feeds))
        return outputs

    def close(self) -> None:
        """Release the session; a later ``run`` raises ``ModelLoadFailed`` (retryable)."""
        self._session = None


def session_options(settings: EngineSettings) -> ort.SessionOptions:
    """Deliberate session options: sequential execution, full graph optimisation, no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # NOTE: spinning threads burn CPU between requests and starve other worker processes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT's warnings are not actionable for users
    return options


def warm_up_feeds(signature: ModelSignature) -> dict[str, np.ndarray]:
    """Zeros (empty strings) of batch 1 for every input; other dynamic dimensions are 1."""
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = tuple(1 if d is None else d for d in spec.shape)
        if spec.dtype == "string":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.dtype])
    return feeds
