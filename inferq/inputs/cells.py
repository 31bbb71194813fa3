"""Per-dtype rules for single values: the msgspec fast-path types and the precise slow check."""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec
import numpy as np

from inferq.contracts.models import DType

# numpy dtype per signature dtype; strings travel as object arrays of str (what ONNX Runtime takes).
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
    "string": np.dtype(object),
}
_FLOAT_MAX = {"float32": float(np.finfo(np.float32).max), "float64": float(np.finfo(np.float64).max)}
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class CellError(Exception):
    """One value does not fit its dtype; ``reason`` reads after a subject ("feature 'x' ...")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fast_convert(value: Any, *, dtype: DType, depth: int, allow_nan: bool) -> list[Any]:
    """``value`` as a ``depth``-deep nested list of valid values, or ``msgspec.ValidationError``.

    The fast path's check: one pass in C over types, and (through finite bounds on floats) NaN,
    ±inf and values that would overflow the dtype. It only says *whether* the input is good.
    """
    key = (dtype, depth, allow_nan)
    wrapper = _WRAPPERS.get(key)
    if wrapper is None:
        wrapper = _WRAPPERS[key] = _wrapper(dtype, depth=depth, allow_nan=allow_nan)
    values: list[Any] = msgspec.convert((value,), wrapper).values
    return values


# NOTE: msgspec caches type info on Struct classes but re-parses bare generic aliases on every
# call, so each nested-list type is wrapped in a one-field array-like Struct (4x faster per row).
_WRAPPERS: dict[tuple[str, int, bool], Any] = {}


def _wrapper(dtype: DType, *, depth: int, allow_nan: bool) -> Any:
    leaf: Any
    if dtype in _FLOAT_MAX:
        bound = _FLOAT_MAX[dtype]
        leaf = float if allow_nan else Annotated[float, msgspec.Meta(ge=-bound, le=bound)]
    elif dtype in _INT_RANGE:
        low, high = _INT_RANGE[dtype]
        leaf = Annotated[int, msgspec.Meta(ge=low, le=high)]
    elif dtype == "bool":
        leaf = bool
    else:
        leaf = str
    for _ in range(depth):
        leaf = list[leaf]
    return msgspec.defstruct("NestedValues", [("values", leaf)], array_like=True)


def check_cell(value: Any, *, dtype: DType, allow_nan: bool) -> Any:
    """Return ``value`` as a plain Python value of ``dtype``'s kind, or raise ``CellError``."""
    if dtype in _FLOAT_MAX:
        return _check_float(value, dtype=dtype, allow_nan=allow_nan)
    if dtype in _INT_RANGE:
        return _check_int(value, dtype=dtype)
    if dtype == "bool":
        if isinstance(value, bool | np.bool_):
            return bool(value)
        raise CellError(f"must be true or false, got {describe(value)}")
    if isinstance(value, str):
        return value
    raise CellError(f"must be a string, got {describe(value)}")


def _check_float(value: Any, *, dtype: str, allow_nan: bool) -> float:
    if not _is_number(value):
        raise CellError(f"must be a number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise CellError(f"is out of range for {dtype}") from None
    if not math.isfinite(number):
        if allow_nan:
            return number
        raise CellError(nonfinite_reason(number))
    if abs(number) > _FLOAT_MAX[dtype] and not allow_nan:
        raise CellError(f"= {number:g} is out of range for {dtype}")
    return number


def _check_int(value: Any, *, dtype: str) -> int:
    if not _is_number(value):
        raise CellError(f"must be an integer, got {describe(value)}")
    if isinstance(value, float | np.floating) and not float(value).is_integer():
        raise CellError(f"must be an integer, got {float(value)!r}")
    number = int(value)
    low, high = _INT_RANGE[dtype]
    if not low <= number <= high:
        raise CellError(f"= {number} is out of range for {dtype}")
    return number


def nonfinite_reason(number: float) -> str:
    """Why a NaN or infinite value is rejected, reading after its subject."""
    shown = "NaN" if math.isnan(number) else f"infinite ({number})"
    return f"is {shown}; this model does not accept NaN or infinite values"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def describe(value: Any) -> str:
    """How a wrong value reads in an error message: its JSON kind, and the value when short."""
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return f"a boolean ({str(bool(value)).lower()})"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "…"
        return f"a string ({shown!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple | np.ndarray):
        return "a list"
    if _is_number(value):
        return f"a number ({value!r})"
    return f"a {type(value).__name__}"
