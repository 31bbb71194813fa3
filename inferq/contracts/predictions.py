"""Predictions as users see them, and tensors as they travel on the wire."""

from __future__ import annotations

from typing import Any

import msgspec

from inferq.contracts.models import DType


class Tensor(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A named tensor as ``(name, dtype, shape, bytes)``: C-order little-endian raw data.

    ``string`` tensors carry msgpack-encoded lists of str in ``data``.
    """

    name: str
    dtype: DType
    shape: tuple[int, ...]
    data: bytes


class Prediction(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One row's answer. Classifiers: ``label`` (+ ``class_name``, ``probabilities``,
    ``confidence``); regressors: ``value``; other models: raw ``outputs``."""

    label: int | str | None = None
    class_name: str | None = None
    probabilities: dict[str, float] | None = None
    confidence: float | None = None
    value: float | list[float] | None = None
    outputs: dict[str, Any] | None = None
