"""Open Inference Protocol input tensors → the model's feeds, checked against its signature.

JSON ``data`` (flat, or nested exactly as ``shape``) and binary data (``binary_data_size`` bytes per
input, in input order, after the JSON header) both end in ``convert_named``: the same value, NaN,
row and element-cap checks as v1's named tensors. Names, datatypes and shapes are checked here
first, so errors speak the protocol's terms (``FP32``, ``-1``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.contracts.v2 import DATATYPES, DTYPES, OTHER_DATATYPES, RequestInput
from inferq.errors import InvalidInput
from inferq.inputs.arrays import fits
from inferq.inputs.cells import describe
from inferq.inputs.limits import check_elements
from inferq.inputs.named import convert_named
from inferq.inputs.v2_binary import decode_binary

_UNSUPPORTED = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def v2_feeds(
    inputs: Sequence[RequestInput],
    binary: bytes | memoryview | None,
    signature: ModelSignature,
    *,
    max_elements: int,
) -> dict[str, np.ndarray]:
    """``{input name: array}`` for the request's inputs; ``InvalidInput`` naming the first problem.

    ``binary`` is the body after the JSON header (``None`` without ``Inference-Header-Content-Length``);
    the inputs' ``binary_data_size`` values must add up to exactly its length.
    """
    specs = {spec.name: spec for spec in signature.inputs}
    payload: dict[str, Any] = {}
    offset = elements = 0
    for item in inputs:
        spec = _spec(item, specs, seen=payload)
        shape = _check_tensor(item, spec)
        elements += math.prod(shape)
        check_elements(elements, max_elements=max_elements)
        size = _binary_size(item)
        if size is None:
            payload[item.name] = {"shape": list(shape), "data": _flat_data(item, shape)}
            continue
        if binary is None:
            raise InvalidInput(
                f"input {item.name!r} has binary_data_size but the request has no Inference-Header-Content-Length "
                "header, so there is no binary data",
                field=item.name,
            )
        if offset + size > len(binary):
            raise InvalidInput(
                f"input {item.name!r}: binary_data_size {size} runs past the end of the body "
                f"({len(binary) - offset} bytes of binary data left)",
                field=item.name,
            )
        raw = binary[offset : offset + size]
        offset += size
        payload[item.name] = decode_binary(raw, name=item.name, dtype=spec.dtype, shape=shape)
    if binary is not None and offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary)} bytes of binary data after the JSON header, "
            f"but the inputs' binary_data_size values add up to {offset}"
        )
    return convert_named(payload, signature, max_elements=max_elements)


def v2_shape(shape: Sequence[int | None]) -> tuple[int, ...]:
    """A signature shape in the protocol's form: ``-1`` for a dynamic dimension."""
    return tuple(-1 if d is None else d for d in shape)


def _spec(item: RequestInput, specs: Mapping[str, TensorSpec], *, seen: Mapping[str, Any]) -> TensorSpec:
    spec = specs.get(item.name)
    if spec is None:
        raise InvalidInput(f"unknown input {item.name!r}; this model's inputs are: {', '.join(specs)}", field=item.name)
    if item.name in seen:
        raise InvalidInput(f"input {item.name!r} appears twice", field=item.name)
    for name in _UNSUPPORTED:
        if name in item.parameters:
            raise InvalidInput(f"input {item.name!r}: shared memory is not supported ({name})", field=item.name)
    return spec


def _check_tensor(item: RequestInput, spec: TensorSpec) -> tuple[int, ...]:
    """The datatype must be the model's exactly; the shape must fit the model's."""
    expected = DATATYPES[spec.dtype]
    if item.datatype != expected:
        known = item.datatype in DTYPES or item.datatype in OTHER_DATATYPES
        what = f"datatype {item.datatype}" if known else f"unknown datatype {item.datatype!r}"
        raise InvalidInput(f"input {item.name!r}: {what}; the model takes {expected}", field=item.name)
    shape = item.shape
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {item.name!r}: shape {list(shape)} has a negative dimension", field=item.name)
    if not fits(shape, spec):
        raise InvalidInput(
            f"input {item.name!r}: shape {list(shape)} does not match the model's {list(v2_shape(spec.shape))}",
            field=item.name,
            expected_shape=list(v2_shape(spec.shape)),
        )
    return shape


def _binary_size(item: RequestInput) -> int | None:
    size = item.parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(
            f"input {item.name!r}: binary_data_size must be a non-negative integer, got {size!r}", field=item.name
        )
    if item.data is not None:
        raise InvalidInput(f"input {item.name!r} has both data and binary_data_size: send one", field=item.name)
    return size


def _flat_data(item: RequestInput, shape: tuple[int, ...]) -> list[Any]:
    """``data`` flattened row-major: a flat list as sent, or a nested one exactly as deep and wide as ``shape``."""
    data = item.data
    if data is None:
        raise InvalidInput(f"input {item.name!r} has neither data nor binary_data_size", field=item.name)
    if not isinstance(data, list):
        raise InvalidInput(f"input {item.name!r}: data must be a list, got {describe(data)}", field=item.name)
    if not data or not isinstance(data[0], list):
        return data  # flat: its length and values are checked against the shape downstream
    flat: list[Any] = []

    def visit(node: Any, depth: int, index: tuple[int, ...]) -> None:
        if not isinstance(node, list) or len(node) != shape[depth]:
            got = f"{len(node)} items" if isinstance(node, list) else describe(node)
            where = f"the list at {list(index)}" if index else "the outer list"
            raise InvalidInput(
                f"input {item.name!r}: nested data does not match shape {list(shape)}: "
                f"{where} should have {shape[depth]} items, got {got}",
                field=item.name,
            )
        if depth == len(shape) - 1:
            flat.extend(node)
            return
        for k, child in enumerate(node):
            visit(child, depth + 1, (*index, k))

    if len(shape) < 2:
        raise InvalidInput(f"input {item.name!r}: data is nested but shape {list(shape)} has one dimension")
    visit(data, 0, ())
    return flat
