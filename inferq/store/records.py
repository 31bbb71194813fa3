"""Conversions between table rows and the contracts that repositories return."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import msgspec

from inferq.contracts.models import Alias, ModelSignature, ModelVersion, Shadow, VersionStatus
from inferq.errors import InvalidInput
from inferq.store.tables import AliasRow, VersionRow

Overrides = dict[str, int | float]
RESULT_CACHE_TTL_S = "result_cache_ttl_s"  # the result cache's override (api/result_cache.py)


def version_from_row(model: str, row: VersionRow) -> ModelVersion:
    """The contract for one ``model_versions`` row of the model named ``model``."""
    return ModelVersion(
        model=model,
        version=row.version,
        status=cast(VersionStatus, row.status),  # a CHECK constraint keeps it one of the three
        signature=msgspec.convert(row.signature, ModelSignature),
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        description=row.description,
        overrides=msgspec.convert(row.overrides, Overrides),
    )


def alias_from_row(model: str, row: AliasRow) -> Alias:
    """The contract for one ``model_aliases`` row (JSON object keys are version numbers)."""
    return Alias(
        model=model,
        name=row.name,
        weights=weights_from_json(row.weights),
        fallback=row.fallback,
        shadow=msgspec.convert(row.shadow, Shadow) if row.shadow is not None else None,
        previous=weights_from_json(row.previous) if row.previous is not None else None,
    )


def weights_from_json(weights: Mapping[str, Any]) -> dict[int, int]:
    """``{"2": 95, "3": 5}`` as stored → ``{2: 95, 3: 5}``."""
    return {int(version): int(weight) for version, weight in weights.items()}


def weights_to_json(weights: Mapping[int, int]) -> dict[str, int]:
    """``{2: 95, 3: 5}`` → ``{"2": 95, "3": 5}`` (JSON object keys are strings)."""
    return {str(version): weight for version, weight in sorted(weights.items())}


def signature_to_json(signature: ModelSignature) -> dict[str, Any]:
    """The msgspec encoding of a signature, as a JSON-ready dict for a JSONB column."""
    return cast(dict[str, Any], msgspec.to_builtins(signature))


# Every serving override there is, with its range: the workers' (``workers/config.py``), the API's admission
# limit and the result cache's TTL (0 = off; at most 30 days). Bounded so a value can never overflow a Redis
# argument or a stream read's COUNT.
_INT32 = 2**31 - 1
OVERRIDE_RANGES: dict[str, tuple[float, float]] = {
    "max_batch": (1, 100_000),
    "max_batch_delay_ms": (0, 60_000),
    "reclaim_min_idle_ms": (100, 86_400_000),
    "max_deliveries": (1, 1_000),
    "intra_op_threads": (1, 1_024),
    "admission_limit": (0, _INT32),  # 0: the partition refuses every request (503)
    RESULT_CACHE_TTL_S: (0, 30 * 86_400),
}


def check_overrides(
    overrides: Mapping[str, int | float] | None, *, signature: ModelSignature | None = None
) -> Overrides:
    """Per-version serving overrides: names to finite numbers (``{"max_batch": 32}``).

    With the version's ``signature``, also the rules that depend on the model (``check_result_cache``);
    callers that store overrides must pass it.
    """
    clean: Overrides = {}
    for key, value in (overrides or {}).items():
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not isinstance(key, str) or not key or not number_ok or not math.isfinite(value):
            raise InvalidInput(f"invalid serving override {key!r}: {value!r} (a finite number)", field="overrides")
        bounds = OVERRIDE_RANGES.get(key)
        if bounds is None:  # a typo (``max_btach``) would otherwise be stored and silently do nothing
            known = ", ".join(sorted(OVERRIDE_RANGES))
            raise InvalidInput(f"unknown serving override {key!r}; known: {known}", field="overrides", override=key)
        low, high = bounds
        if not low <= value <= high:
            raise InvalidInput(
                f"serving override {key!r} must be between {int(low)} and {int(high)}, got {value!r}",
                field="overrides",
                override=key,
            )
        clean[key] = value
    if signature is not None:
        check_result_cache(clean, signature)
    return clean


def check_result_cache(overrides: Mapping[str, int | float], signature: ModelSignature) -> None:
    """``result_cache_ttl_s`` (seconds; > 0 enables the result cache) only for deterministic models."""
    ttl_s = overrides.get(RESULT_CACHE_TTL_S, 0)
    if ttl_s < 0:
        raise InvalidInput(f"{RESULT_CACHE_TTL_S} must be 0 (off) or a positive number of seconds", field="overrides")
    if ttl_s > 0 and signature.nondeterministic_ops:
        ops = ", ".join(signature.nondeterministic_ops)
        raise InvalidInput(
            f"{RESULT_CACHE_TTL_S} cannot be enabled: the model is not deterministic (random operators: {ops})",
            field="overrides",
            nondeterministic_ops=list(signature.nondeterministic_ops),
        )
