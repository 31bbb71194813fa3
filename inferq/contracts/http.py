"""HTTP bodies of the v1 API: what callers send (strict) and what they get back."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.messages import State
from inferq.contracts.models import ModelSignature, Shadow, VersionStatus
from inferq.contracts.predictions import Prediction
from inferq.contracts.stats import Latency

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


class Fallback(msgspec.Struct, frozen=True, kw_only=True):
    """The alias's chosen version could not serve (``not_ready``: no live consumer; ``load_failed``: its model
    failed to load): the version in ``version`` (the previous active one) served instead."""

    from_version: int
    reason: Literal["not_ready", "load_failed"]


class PredictionResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One prediction request: its state, and its outputs or error once it has finished."""

    id: str
    status: State
    model: str
    version: int
    predictions: tuple[Prediction, ...] = ()
    error: ErrorInfo | None = None
    timings: ResponseTimings | None = None
    fallback: Fallback | None = None  # routed away from the version the alias chose (docs/models.md)
    cached: bool = False  # answered from the result cache (the version's result_cache_ttl_s): no worker ran it


class AliasView(msgspec.Struct, frozen=True, kw_only=True):
    """An alias: its traffic weights by version, whether it falls back, its shadow, and the weights it had
    before its last change (``previous``, what a rollback restores)."""

    name: str
    weights: dict[int, int]
    fallback: bool = False
    shadow: Shadow | None = None
    previous: dict[int, int] | None = None


class ShadowBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Mirror ``share`` percent (1-100) of the alias's requests to ``version``: run and logged, never answered."""

    version: int
    share: int


class AliasBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/models/{model}/aliases/{alias}``: exactly one of ``version`` (a pin) or ``weights`` (percentages
    by version, summing to 100). Left out, ``fallback`` and ``shadow`` keep the alias's (a shadow whose version
    becomes weighted ends); ``"shadow": null`` ends the shadow."""

    version: int | UnsetType = UNSET
    weights: dict[int, int] | UnsetType = UNSET
    fallback: bool | UnsetType = UNSET
    shadow: ShadowBody | UnsetType | None = UNSET


class VersionPatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PATCH /v1/models/{model}/versions/{version}``: what to change; ``overrides`` replaces them whole
    (``{}`` clears them), ``"description": null`` clears the description."""

    status: VersionStatus | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    # NOTE: floats on the wire (int | float would be a oneOf an int matches twice); whole numbers are stored as ints.
    overrides: dict[str, float] | UnsetType = UNSET


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


# ``GET /v1/models/{model}/compare`` (shadow traffic and canaries, issue 6).


class Agreement(msgspec.Struct, frozen=True, kw_only=True):
    """How often two versions predicted the same for the same inputs (classifiers only: the prediction log
    keeps predicted classes, not regression values). ``pairs``: what could be paired; ``compared``: those
    with a class on both sides (both succeeded); ``rate`` = agreed / compared, null when nothing compared."""

    pairs: int
    compared: int
    agreed: int
    rate: float | None


class VersionComparison(msgspec.Struct, frozen=True, kw_only=True):
    """One version's logged results in the window, mirrored ones (``shadow_requests``) included.

    ``errors``: results that did not succeed (``statuses`` says how they ended); ``latency``: of the results
    that succeeded; ``classes``: predicted rows per class.
    """

    version: int
    requests: int
    shadow_requests: int
    rows: int
    errors: int
    error_rate: float
    statuses: dict[str, int]
    latency: Latency
    classes: dict[str, int]


class PairComparison(msgspec.Struct, frozen=True, kw_only=True):
    """Two versions on the same inputs. ``shadow``: requests served by one paired with their mirror on the
    other (either way round); ``canary``: distinct inputs (``input_digest``) both were sent outside shadowing,
    each version's most frequent answer to them compared."""

    versions: tuple[int, int]
    shadow: Agreement
    canary: Agreement


class ModelComparison(msgspec.Struct, frozen=True, kw_only=True):
    """Versions of ``model`` side by side over the logged results from ``since`` to ``until`` (every tenant)."""

    model: str
    since: dt.datetime
    until: dt.datetime
    versions: tuple[VersionComparison, ...]
    pairs: tuple[PairComparison, ...]
