"""Named tensors: ``{input: nested list}``, ``{input: {"shape": [...], "data": [...]}}`` or arrays."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.errors import InvalidInput
from inferq.inputs.arrays import cell_error, check_array, check_batch, check_names, check_shape, fits, shape_error
from inferq.inputs.cells import NUMPY_DTYPES, CellError, check_cell, describe, fast_convert
from inferq.inputs.limits import check_elements


def convert_named(payload: Mapping[str, Any], signature: ModelSignature, *, max_elements: int) -> dict[str, np.ndarray]:
    """Every signature input, by name, converted and checked against its spec."""
    check_names(payload, signature)
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        value = payload[spec.name]
        if isinstance(value, np.ndarray):
            if value.dtype == NUMPY_DTYPES[spec.dtype]:
                feeds[spec.name] = check_array(value, spec, allow_nan=signature.allow_nan)
                continue
            check_elements(value.size, max_elements=max_elements)
            value = value.tolist()  # another dtype: checked value by value, like JSON
        if isinstance(value, dict):
            array = _from_object(value, spec, allow_nan=signature.allow_nan, max_elements=max_elements)
        elif isinstance(value, list | tuple):
            array = _from_nested(value, spec, allow_nan=signature.allow_nan, max_elements=max_elements)
        else:
            raise InvalidInput(
                f"input {spec.name!r}: expected a nested list or an object with 'shape' and 'data', "
                f"got {describe(value)}",
                field=spec.name,
            )
        feeds[spec.name] = array
    check_batch(feeds, max_elements=max_elements)
    return feeds


def _from_nested(value: Any, spec: TensorSpec, *, allow_nan: bool, max_elements: int) -> np.ndarray:
    if not value:
        raise InvalidInput(f"input {spec.name!r} is empty: send at least one row", field=spec.name)
    rank = len(spec.shape)
    check_elements(len(value) * math.prod(d or 1 for d in spec.shape[1:]), max_elements=max_elements)
    dtype = NUMPY_DTYPES[spec.dtype]
    try:
        checked = fast_convert(value, dtype=spec.dtype, depth=rank, allow_nan=allow_nan)
        array = np.asarray(checked, dtype=dtype)
    except (msgspec.ValidationError, ValueError):
        pass
    else:
        if fits(array.shape, spec):
            return array
    array = np.asarray(_walk(value, spec, allow_nan=allow_nan), dtype=dtype)
    check_shape(array.shape, spec)
    return array


def _walk(value: Any, spec: TensorSpec, *, allow_nan: bool) -> Any:
    """The slow path for nested lists: the first list of the wrong length or bad value is raised."""
    rank = len(spec.shape)
    lengths = list(spec.shape)  # a dynamic dimension takes the length first seen at its depth

    def visit(node: Any, index: tuple[int, ...]) -> Any:
        depth = len(index)
        if depth == rank:
            try:
                return check_cell(node, dtype=spec.dtype, allow_nan=allow_nan)
            except CellError as exc:
                raise cell_error(spec, index, exc.reason) from None
        where = f"the list at {list(index)}" if index else "the outer list"
        if not isinstance(node, list | tuple):
            raise shape_error(spec, f"{where} is {describe(node)}", index)
        expected = lengths[depth]
        if expected is None:
            lengths[depth] = len(node)
        elif len(node) != expected:
            raise shape_error(spec, f"{where} has {len(node)} items, not {expected}", index)
        return [visit(child, (*index, k)) for k, child in enumerate(node)]

    return visit(value, ())


def _from_object(value: dict[Any, Any], spec: TensorSpec, *, allow_nan: bool, max_elements: int) -> np.ndarray:
    name = spec.name
    if set(value) != {"shape", "data"}:
        raise InvalidInput(f"input {name!r}: a tensor object has exactly the keys 'shape' and 'data'", field=name)
    shape, data = value["shape"], value["data"]
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of non-negative integers", field=name)
    check_shape(tuple(shape), spec)
    count = math.prod(shape)
    check_elements(count, max_elements=max_elements)
    if not isinstance(data, list | tuple) or len(data) != count:
        got = f"{len(data)} values" if isinstance(data, list | tuple) else describe(data)
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs a flat list of {count} values, got {got}", field=name
        )
    dtype = NUMPY_DTYPES[spec.dtype]
    try:
        flat = fast_convert(data, dtype=spec.dtype, depth=1, allow_nan=allow_nan)
    except msgspec.ValidationError:
        flat = []
        for k, cell in enumerate(data):
            try:
                flat.append(check_cell(cell, dtype=spec.dtype, allow_nan=allow_nan))
            except CellError as exc:
                index = tuple(int(i) for i in np.unravel_index(k, shape))
                raise cell_error(spec, index, exc.reason) from None
    return np.asarray(flat, dtype=dtype).reshape(shape)
