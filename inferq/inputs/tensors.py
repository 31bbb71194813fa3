"""Wire tensors: arrays ↔ ``Tensor(name, dtype, shape, bytes)``, raw little-endian C-order data."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import numpy as np

from inferq.contracts.models import DType
from inferq.contracts.predictions import Tensor
from inferq.errors import InvalidInput
from inferq.inputs.cells import NUMPY_DTYPES

# Little-endian wire dtypes; string tensors carry a msgpack list of str instead of raw bytes.
_WIRE: dict[str, np.dtype[Any]] = {
    name: dtype.newbyteorder("<") for name, dtype in NUMPY_DTYPES.items() if name != "string"
}
_NAMES: dict[np.dtype[Any], DType] = {
    np.dtype(np.float32): "float32",
    np.dtype(np.float64): "float64",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.bool_): "bool",
}
_STRINGS = msgspec.msgpack.Decoder(list[str])


def encode_tensors(feeds: Mapping[str, np.ndarray]) -> tuple[Tensor, ...]:
    """Arrays → wire tensors (float32/float64/int32/int64/bool raw; str/object arrays as strings)."""
    return tuple(_encode(name, array) for name, array in feeds.items())


def decode_tensors(tensors: Iterable[Tensor]) -> dict[str, np.ndarray]:
    """Wire tensors → ``{name: array}``. Numeric arrays are read-only views of the bytes (no copy)."""
    arrays: dict[str, np.ndarray] = {}
    for tensor in tensors:
        if tensor.name in arrays:
            raise InvalidInput(f"tensor {tensor.name!r} appears twice", field=tensor.name)
        arrays[tensor.name] = _decode(tensor)
    return arrays


def _encode(name: str, array: np.ndarray) -> Tensor:
    shape = tuple(int(d) for d in array.shape)
    if array.dtype.kind in "OU":
        values = array.ravel().tolist()
        if not all(isinstance(value, str) for value in values):
            raise InvalidInput(f"tensor {name!r}: an object array must hold only strings", field=name)
        return Tensor(name=name, dtype="string", shape=shape, data=msgspec.msgpack.encode(values))
    dtype = _NAMES.get(array.dtype.newbyteorder("="))
    if dtype is None:
        raise InvalidInput(f"tensor {name!r}: unsupported dtype {array.dtype}", field=name)
    data = np.ascontiguousarray(array, dtype=_WIRE[dtype]).tobytes()
    return Tensor(name=name, dtype=dtype, shape=shape, data=data)


def _decode(tensor: Tensor) -> np.ndarray:
    name, shape = tensor.name, tensor.shape
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"tensor {name!r}: invalid shape {list(shape)}", field=name)
    count = math.prod(shape)
    if tensor.dtype == "string":
        try:
            values = _STRINGS.decode(tensor.data)
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"tensor {name!r}: string data is not a msgpack list of str: {exc}") from None
        if len(values) != count:
            raise InvalidInput(
                f"tensor {name!r}: {len(values)} strings do not match shape {list(shape)} ({count} values)",
                field=name,
            )
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    wire = _WIRE.get(tensor.dtype)
    if wire is None:
        raise InvalidInput(f"tensor {name!r}: unknown dtype {tensor.dtype!r}", field=name)
    expected = count * wire.itemsize
    if len(tensor.data) != expected:
        raise InvalidInput(
            f"tensor {name!r}: {len(tensor.data)} bytes do not match shape {list(shape)} of "
            f"{tensor.dtype} ({expected} bytes)",
            field=name,
        )
    array = np.frombuffer(tensor.data, dtype=wire)
    if tensor.dtype == "bool" and count and array.view(np.uint8).max() > 1:
        raise InvalidInput(f"tensor {name!r}: bool data must be bytes 0 or 1", field=name)
    return array.astype(NUMPY_DTYPES[tensor.dtype], copy=False).reshape(shape)
