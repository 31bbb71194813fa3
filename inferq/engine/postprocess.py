"""``to_predictions``: model outputs → one ``Prediction`` per row.

- classifier: ``label`` (int or str, as the model emits it), ``class_name`` (when the model has
  class names), ``probabilities`` ``{class name or str(label): float}`` in class order, and
  ``confidence`` (the largest probability);
- regressor: ``value``, a float (``[None]`` or ``[None, 1]`` output) or a list of floats (multi-target);
- tensor: ``outputs`` ``{output name: this row's slice as nested lists}``.

Conversion is vectorised: one ``tolist()`` per output, then one plain-Python step per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inferq.contracts.models import ModelSignature
from inferq.contracts.predictions import Prediction

_SMALL = 16  # rows below which plain Python beats numpy's per-call overhead


def to_predictions(signature: ModelSignature, outputs: Mapping[str, np.ndarray]) -> list[Prediction]:
    """One ``Prediction`` per row of ``outputs`` (as returned by ``Runner.run``)."""
    if signature.task == "classifier" and signature.label_output and signature.probabilities_output:
        return _classify(signature, outputs[signature.label_output], outputs[signature.probabilities_output])
    if signature.task == "regressor" and signature.value_output:
        return _regress(outputs[signature.value_output])
    return _tensors(outputs)


def _classify(signature: ModelSignature, labels: np.ndarray, probabilities: np.ndarray) -> list[Prediction]:
    keys = _probability_keys(signature, width=probabilities.shape[1])
    names = _names_by_label(signature)
    label_list: list[Any] = labels.reshape(-1).tolist()
    rows: list[list[float]] = probabilities.tolist()
    # NOTE: a numpy reduction costs ~1 µs of overhead: worth it for big batches only.
    confidences: list[float] = probabilities.max(axis=1).tolist() if len(rows) > _SMALL else [max(row) for row in rows]
    return [
        Prediction(
            label=label,
            class_name=names.get(label),
            probabilities=dict(zip(keys, row, strict=True)),
            confidence=confidence,
        )
        for label, row, confidence in zip(label_list, rows, confidences, strict=True)
    ]


def _names_by_label(signature: ModelSignature) -> dict[int | str, str]:
    classes, class_names = signature.classes, signature.class_names
    if classes is None or class_names is None or len(classes) != len(class_names):
        return {}
    return dict(zip(classes, class_names, strict=True))


def _probability_keys(signature: ModelSignature, *, width: int) -> Sequence[str]:
    """Class names, else the labels as strings, else column numbers."""
    if signature.class_names is not None and len(signature.class_names) == width:
        return signature.class_names
    if signature.classes is not None and len(signature.classes) == width:
        return [str(label) for label in signature.classes]
    return [str(column) for column in range(width)]


def _regress(values: np.ndarray) -> list[Prediction]:
    if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
        return [Prediction(value=value) for value in values.reshape(-1).tolist()]
    return [Prediction(value=row) for row in values.reshape(values.shape[0], -1).tolist()]


def _tensors(outputs: Mapping[str, np.ndarray]) -> list[Prediction]:
    lists = {name: np.atleast_1d(array).tolist() for name, array in outputs.items()}
    rows = min((len(values) for values in lists.values()), default=0)
    return [Prediction(outputs={name: values[i] for name, values in lists.items()}) for i in range(rows)]
