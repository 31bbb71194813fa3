"""Records and rows: the tabular input forms, converted into the single 2-D input's array."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import msgspec
import numpy as np

from inferq.contracts.models import TensorSpec
from inferq.errors import InvalidInput
from inferq.inputs.cells import NUMPY_DTYPES, CellError, check_cell, describe, fast_convert
from inferq.inputs.limits import check_elements


def convert_rows(
    rows: Sequence[Any],
    spec: TensorSpec,
    *,
    names: Sequence[str] | None,
    allow_nan: bool,
    max_elements: int,
) -> np.ndarray:
    """Rows (lists of values, in the input's column order) → a 2-D array of ``spec.dtype``."""
    width = spec.shape[1]
    first = len(rows[0]) if isinstance(rows[0], list | tuple) else 1
    check_elements(len(rows) * (width or first), max_elements=max_elements)
    dtype = NUMPY_DTYPES[spec.dtype]
    # NOTE: the fast path is one msgspec pass (types, NaN/inf, range) and one numpy copy; it only
    # says *whether* the input is good. The slow path below says exactly where it is not.
    try:
        checked = fast_convert(rows, dtype=spec.dtype, depth=2, allow_nan=allow_nan)
        array = np.asarray(checked, dtype=dtype)
    except (msgspec.ValidationError, ValueError):
        pass
    else:
        if array.ndim == 2 and (width is None or array.shape[1] == width):
            return array
    cleaned = _check_rows(rows, width=width, names=names, dtype=spec.dtype, allow_nan=allow_nan)
    return np.asarray(cleaned, dtype=dtype)


def convert_records(
    records: Sequence[Any],
    spec: TensorSpec,
    *,
    names: Sequence[str],
    allow_nan: bool,
    max_elements: int,
) -> np.ndarray:
    """Records (objects keyed by feature name) → a 2-D array with columns in ``names`` order."""
    check_elements(len(records) * len(names), max_elements=max_elements)
    try:
        table: list[Any] = list(map(_getter(names), records))
        # Every name was found, so a record of exactly len(names) keys has no unknown ones.
        exact = set(map(len, records)) == {len(names)}
    except (KeyError, TypeError, IndexError):
        exact = False
    if not exact:
        table = _check_records(records, names=names)
    return convert_rows(table, spec, names=names, allow_nan=allow_nan, max_elements=max_elements)


def _getter(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) == 1:
        (name,) = names
        return lambda record: (record[name],)
    return itemgetter(*names)


def _check_rows(
    rows: Sequence[Any],
    *,
    width: int | None,
    names: Sequence[str] | None,
    dtype: Any,
    allow_nan: bool,
) -> list[list[Any]]:
    """The slow path: every row and value checked in order; the first problem is raised."""
    expected = width
    cleaned: list[list[Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, list | tuple):
            count = f"{expected} values" if expected is not None else "values"
            single = i == 0 and not isinstance(row, dict)
            hint = "; to send one row, wrap it in a list: [[...]]" if single else ""
            raise InvalidInput(f"row {i}: expected a list of {count}, got {describe(row)}{hint}", row=i)
        if expected is None:
            expected = len(row)  # a dynamic width: row 0 sets it for the rest
        if len(row) != expected:
            raise InvalidInput(
                f"row {i}: expected {expected} values, got {len(row)}", row=i, expected=expected, got=len(row)
            )
        cells: list[Any] = []
        for j, value in enumerate(row):
            try:
                cells.append(check_cell(value, dtype=dtype, allow_nan=allow_nan))
            except CellError as exc:
                raise _cell_error(i, j, names=names, reason=exc.reason) from None
        cleaned.append(cells)
    return cleaned


def _cell_error(row: int, column: int, *, names: Sequence[str] | None, reason: str) -> InvalidInput:
    if names is not None:
        name = names[column]
        return InvalidInput(f"row {row}: feature {name!r} {reason}", row=row, field=name, column=column)
    return InvalidInput(f"row {row}: column {column} {reason}", row=row, column=column)


def _check_records(records: Sequence[Any], *, names: Sequence[str]) -> list[tuple[Any, ...]]:
    """The slow path for records: the first non-record, missing or unknown feature is raised."""
    known = frozenset(names)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidInput(
                f"row {i}: expected a record (an object of feature values), got {describe(record)}; "
                "send every row as a record or every row as a list",
                row=i,
            )
        unknown = [key for key in record if key not in known]
        for name in names:
            if name not in record:
                also = f" (unknown: {', '.join(repr(k) for k in unknown)})" if unknown else ""
                raise InvalidInput(f"row {i}: missing feature {name!r}{also}", row=i, field=name)
        if unknown:
            raise InvalidInput(f"row {i}: unknown feature {unknown[0]!r}", row=i, field=unknown[0])
    return [tuple(record[name] for name in names) for record in records]
