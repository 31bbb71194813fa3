"""The ``inferq.*`` metadata props of an ONNX model: their keys and how they are read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from inferq.errors import InvalidModel

FEATURE_NAMES = "inferq.feature_names"  # JSON list of str, one per input column
CLASS_NAMES = "inferq.class_names"  # JSON list of str, one per class, in class order
CLASSES = "inferq.classes"  # JSON list of int or str: the labels the model emits
ALLOW_NAN = "inferq.allow_nan"  # "true" lets NaN/inf inputs through validation
TASK = "inferq.task"  # "classifier" | "regressor" | "tensor": overrides detection


def read_strings(props: Mapping[str, str], key: str, *, unique: bool = False) -> tuple[str, ...] | None:
    """A JSON list of strings (``unique``: without repeats), or ``None`` when the prop is absent."""
    value = _load(props, key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidModel(f"metadata {key} must be a JSON list of strings")
    if unique:
        _check_unique(key, value, what="names")
    return tuple(value)


def read_classes(props: Mapping[str, str]) -> tuple[int, ...] | tuple[str, ...] | None:
    """``inferq.classes``: a JSON list of integers or of strings."""
    value = _load(props, CLASSES)
    if value is None:
        return None
    integers = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not integers and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise InvalidModel(f"metadata {CLASSES} must be a JSON list of integers or of strings")
    _check_unique(CLASSES, value, what="labels")
    return tuple(value)


def read_flag(props: Mapping[str, str], key: str) -> bool:
    """``true``/``false`` (or ``1``/``0``); absent is false."""
    raw = props.get(key, "false").strip().lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidModel(f"metadata {key} must be true or false, got {raw!r}")
    return raw in ("true", "1")


def _check_unique(key: str, values: list[Any], *, what: str) -> None:
    # NOTE: names key dicts (records, probabilities): a repeat would silently drop a column.
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise InvalidModel(f"metadata {key} has duplicate {what}: {value!r}")
        seen.add(value)


def _load(props: Mapping[str, str], key: str) -> Any:
    raw = props.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidModel(f"metadata {key} is not valid JSON: {exc}") from None
