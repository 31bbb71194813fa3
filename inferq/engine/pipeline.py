"""``predict``: raw user input → feeds → ONNX Runtime → predictions, in-process."""

from __future__ import annotations

from typing import Any

from inferq.contracts.predictions import Prediction
from inferq.engine.postprocess import to_predictions
from inferq.engine.runner import Runner
from inferq.inputs import MAX_ELEMENTS, to_feeds


def predict(runner: Runner, payload: Any, *, max_elements: int = MAX_ELEMENTS) -> list[Prediction]:
    """Validate ``payload`` against the runner's signature, run it, and postprocess each row."""
    feeds = to_feeds(payload, runner.signature, max_elements=max_elements)
    return to_predictions(runner.signature, runner.run(feeds))
