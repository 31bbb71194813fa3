"""``to_feeds``: the three user input forms → the model's feed dict, checked against its signature."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.errors import InvalidInput
from inferq.inputs.cells import describe
from inferq.inputs.limits import MAX_ELEMENTS
from inferq.inputs.named import convert_named
from inferq.inputs.tabular import convert_records, convert_rows


def to_feeds(payload: Any, signature: ModelSignature, *, max_elements: int = MAX_ELEMENTS) -> dict[str, np.ndarray]:
    """Convert user inputs into ``{input name: array}`` of the signature's dtypes and shapes.

    - records: ``[{"alcohol": 9.4, ...}, ...]`` → the single 2-D input, columns in
      ``signature.feature_names`` order;
    - rows: ``[[7.4, 0.7, ...], ...]`` → the single 2-D input;
    - named tensors: ``{name: nested list}`` or ``{name: {"shape": [...], "data": [flat]}}``
      (numpy arrays are accepted as values too).

    A dict is always named tensors: send a single record as a list of one. Any problem raises
    ``InvalidInput`` naming the row and feature (``details``: ``row``, ``field``).
    """
    if isinstance(payload, dict):
        return convert_named(payload, signature, max_elements=max_elements)
    if isinstance(payload, np.ndarray) and len(signature.inputs) == 1:
        return convert_named({signature.inputs[0].name: payload}, signature, max_elements=max_elements)
    if not isinstance(payload, list | tuple):
        raise InvalidInput(
            f"inputs must be a list of records, a list of rows, or an object of named tensors; got {describe(payload)}"
        )
    if not payload:
        raise InvalidInput("no inputs: send at least one row")
    spec = _tabular_input(signature)
    if isinstance(payload[0], dict):
        names = signature.feature_names
        if names is None:
            raise InvalidInput(
                "this model has no feature names, so it cannot take records; "
                f"send rows instead (lists of {spec.shape[1] or 'N'} numbers in column order)"
            )
        array = convert_records(payload, spec, names=names, allow_nan=signature.allow_nan, max_elements=max_elements)
    else:
        array = convert_rows(
            payload,
            spec,
            names=signature.feature_names,
            allow_nan=signature.allow_nan,
            max_elements=max_elements,
        )
    return {spec.name: array}


def batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    """Rows in a feed dict: the first dimension of its first array (0 when empty)."""
    for array in feeds.values():
        return int(array.shape[0])
    return 0


def _tabular_input(signature: ModelSignature) -> TensorSpec:
    """The one 2-D input that records and rows fill, or an error saying to send named tensors."""
    if len(signature.inputs) == 1 and len(signature.inputs[0].shape) == 2:
        return signature.inputs[0]
    names = ", ".join(repr(spec.name) for spec in signature.inputs)
    raise InvalidInput(
        f"this model does not take records or rows; send named tensors, an object with the inputs {names}"
    )
