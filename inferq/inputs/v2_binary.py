"""The V2 binary tensor data layout: raw little-endian, row-major elements; BYTES as 4-byte length + bytes.

Numeric and BOOL wire tensors already have this layout, so binary outputs are sent without a copy
or a conversion; only BYTES (strings) are re-framed.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgspec
import numpy as np

from inferq.contracts.models import DType
from inferq.contracts.predictions import Tensor
from inferq.contracts.v2 import DATATYPES
from inferq.errors import InvalidInput
from inferq.inputs.cells import NUMPY_DTYPES

_RAW: dict[str, np.dtype[Any]] = {
    name: dtype.newbyteorder("<") for name, dtype in NUMPY_DTYPES.items() if name != "string"
}
_LENGTH = struct.Struct("<I")
_STRINGS = msgspec.msgpack.Decoder(list[str])


def decode_binary(raw: bytes | memoryview, *, name: str, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    """One input's binary data as an array of ``dtype`` and ``shape``; ``InvalidInput`` when it does not fit."""
    count = math.prod(shape)
    datatype = DATATYPES[dtype]
    if dtype == "string":
        values = _split_elements(raw, name=name)
        if len(values) != count:
            raise InvalidInput(
                f"input {name!r}: the binary data holds {len(values)} BYTES elements; "
                f"shape {list(shape)} needs {count}",
                field=name,
            )
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    wire = _RAW[dtype]
    expected = count * wire.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input {name!r}: binary_data_size is {len(raw)} bytes, but shape {list(shape)} of {datatype} "
            f"is {expected} bytes",
            field=name,
        )
    array = np.frombuffer(raw, dtype=wire)
    if dtype == "bool" and count and array.view(np.uint8).max() > 1:
        raise InvalidInput(f"input {name!r}: BOOL elements must be the bytes 0 or 1", field=name)
    return array.astype(NUMPY_DTYPES[dtype], copy=False).reshape(shape)


def encode_binary(tensor: Tensor) -> bytes:
    """A wire tensor's elements in the V2 binary layout."""
    if tensor.dtype != "string":
        return tensor.data  # NOTE: already little-endian, C-order raw data (bool as bytes 0/1)
    values = _STRINGS.decode(tensor.data)
    parts: list[bytes] = []
    for value in values:
        encoded = value.encode()
        parts += (_LENGTH.pack(len(encoded)), encoded)
    return b"".join(parts)


def _split_elements(raw: bytes | memoryview, *, name: str) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes of UTF-8 text."""
    view = memoryview(raw)
    values: list[str] = []
    offset, size = 0, len(view)
    while offset < size:
        if offset + 4 > size:
            raise InvalidInput(f"input {name!r}: BYTES data ends inside an element's 4-byte length", field=name)
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInput(
                f"input {name!r}: BYTES element {len(values)} says {length} bytes, only {size - offset} remain",
                field=name,
            )
        try:
            values.append(str(view[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"input {name!r}: BYTES element {len(values)} is not UTF-8 text", field=name) from None
        offset += length
    return values
