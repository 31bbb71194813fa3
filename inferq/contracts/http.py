"""HTTP bodies of the v1 API: what callers send (strict) and what they get back."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.messages import State
from inferq.contracts.models import ModelSignature, VersionStatus
from inferq.contracts.predictions import Prediction

_INPUTS = msgspec.Meta(
    description=(
        "Records (a list of objects keyed by feature name), rows (a list of lists in column order), "
        'or named tensors (an object: input name → nested list, or {"shape": [...], "data": [flat]}).'
    ),
    examples=[
        [{"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}],
        [[5.1, 3.5, 1.4, 0.2]],
    ],
)


class PredictBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/models/{model}/predict``: records, rows, or named tensors under ``inputs``."""

    inputs: Annotated[Any, _INPUTS]


class ResponseTimings(msgspec.Struct, frozen=True, kw_only=True):
    """Milliseconds spent queued, in the model run (shared by ``batch_rows`` rows), and in total."""

    queue_ms: float
    inference_ms: float
    total_ms: float
    batch_rows: int


class PredictionResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One prediction request: its state, and its outputs or error once it has finished."""

    id: str
    status: State
    model: str
    version: int
    predictions: tuple[Prediction, ...] = ()
    error: ErrorInfo | None = None
    timings: ResponseTimings | None = None


class AliasView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    weights: dict[int, int]
    fallback: bool = False


class VersionView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A version as served: ``ready`` when some worker consumes its partition right now."""

    version: int
    status: VersionStatus
    ready: bool
    signature: ModelSignature
    sha256: str
    size_bytes: int
    created_at: dt.datetime
    description: str | None = None
    # NOTE: ints stay ints on the wire; ``int | float`` would be documented as a oneOf that an int matches twice.
    overrides: dict[str, float] = {}


class ModelView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A model: ``ready`` when a version its ``default`` alias points at is ready."""

    name: str
    ready: bool
    created_at: dt.datetime
    versions: tuple[VersionView, ...]
    aliases: tuple[AliasView, ...]
    description: str | None = None


class ModelList(msgspec.Struct, frozen=True, kw_only=True):
    models: tuple[ModelView, ...]


class HealthReport(msgspec.Struct, frozen=True, kw_only=True):
    """``ok`` or ``unavailable``, with one line per dependency checked."""

    status: str
    checks: dict[str, str] = {}


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details, with the domain error ``code`` and structured ``details``."""

    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    details: dict[str, Any] = {}
