"""Ready arrays (decoded wire tensors, converted inputs) checked against a signature."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.errors import InvalidInput
from inferq.inputs.cells import NUMPY_DTYPES, describe, nonfinite_reason
from inferq.inputs.limits import check_elements


def check_feeds(
    feeds: Mapping[str, np.ndarray], signature: ModelSignature, *, max_elements: int
) -> dict[str, np.ndarray]:
    """Check ready arrays (e.g. decoded wire tensors) against the signature: names, dtypes, shapes."""
    check_names(feeds, signature)
    checked = {s.name: check_array(feeds[s.name], s, allow_nan=signature.allow_nan) for s in signature.inputs}
    check_batch(checked, max_elements=max_elements)
    return checked


def check_array(array: np.ndarray, spec: TensorSpec, *, allow_nan: bool) -> np.ndarray:
    """One ready array: its dtype must be exactly the spec's; shape and values are checked."""
    if array.dtype != NUMPY_DTYPES[spec.dtype]:
        raise InvalidInput(f"input {spec.name!r}: expected {spec.dtype}, got {array.dtype}", field=spec.name)
    check_shape(array.shape, spec)
    if array.dtype.kind == "f" and not allow_nan:
        bad = ~np.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise cell_error(spec, index, nonfinite_reason(float(array[index])))
    elif spec.dtype == "string":
        for k, value in enumerate(array.flat):
            if not isinstance(value, str):
                index = tuple(int(i) for i in np.unravel_index(k, array.shape))
                raise cell_error(spec, index, f"must be a string, got {describe(value)}")
    return array


def check_batch(feeds: Mapping[str, np.ndarray], *, max_elements: int) -> None:
    """Every input has the same, non-zero number of rows; the total stays under the cap."""
    check_elements(sum(array.size for array in feeds.values()), max_elements=max_elements)
    first_name, rows = None, 0
    for name, array in feeds.items():
        if array.shape[0] == 0:
            raise InvalidInput(f"input {name!r} is empty: send at least one row", field=name)
        if first_name is None:
            first_name, rows = name, array.shape[0]
        elif array.shape[0] != rows:
            raise InvalidInput(
                f"input {name!r} has {array.shape[0]} rows but input {first_name!r} has {rows}; "
                "every input needs the same number of rows",
                field=name,
            )


def check_names(payload: Mapping[str, Any], signature: ModelSignature) -> None:
    """Every signature input present, no unknown names."""
    expected = [spec.name for spec in signature.inputs]
    for name in payload:
        if name not in expected:
            hint = ""
            if name in (signature.feature_names or ()):
                hint = "; to send one record, wrap it in a list: [{...}]"
            inputs = ", ".join(expected)
            raise InvalidInput(f"unknown input {name!r}; this model's inputs are: {inputs}{hint}", field=name)
    for name in expected:
        if name not in payload:
            raise InvalidInput(f"missing input {name!r}", field=name)


def fits(shape: tuple[int, ...], spec: TensorSpec) -> bool:
    """Whether ``shape`` has the spec's rank and fixed dimensions (``None`` matches any)."""
    if len(shape) != len(spec.shape):
        return False
    return all(d is None or d == n for d, n in zip(spec.shape, shape, strict=True))


def check_shape(shape: tuple[int, ...], spec: TensorSpec) -> None:
    """Raise ``InvalidInput`` unless ``shape`` has the spec's rank and fixed dimensions."""
    if not fits(shape, spec):
        raise shape_error(spec, f"got {list(shape)}", ())


def shape_error(spec: TensorSpec, problem: str, index: tuple[int, ...]) -> InvalidInput:
    """An error naming the input, its expected shape and what is wrong."""
    expected = shape_text(spec.shape)
    details: dict[str, Any] = {"field": spec.name, "expected_shape": expected}
    if index:
        details["row"] = index[0]
    return InvalidInput(f"input {spec.name!r}: expected shape {expected}; {problem}", **details)


def shape_text(shape: tuple[int | None, ...]) -> str:
    """A shape as users write it: ``[None, 4]``."""
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"


def cell_error(spec: TensorSpec, index: tuple[int, ...], reason: str) -> InvalidInput:
    """An error naming the input and the index of the bad value."""
    return InvalidInput(
        f"input {spec.name!r} at {list(index)}: value {reason}",
        field=spec.name,
        row=index[0] if index else None,
        index=list(index),
    )
