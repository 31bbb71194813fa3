"""Alias traffic: weights and shadows validated against the model's versions, and the weighted choice."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Literal

from inferq.contracts.models import ModelSignature, Shadow, TensorSpec, VersionStatus
from inferq.errors import InvalidInput

TOTAL_WEIGHT = 100
# A version's status, or ``deleted`` (soft-deleted: archived and hidden, its number kept).
Standing = VersionStatus | Literal["deleted"]


def check_weights(model: str, weights: Mapping[int, int], *, statuses: Mapping[int, Standing]) -> dict[int, int]:
    """Weights that pin or split traffic: existing, servable versions; positive integers summing to 100.

    ``statuses`` are the model's versions (deleted ones included); anything else is ``InvalidInput``
    saying what is wrong.
    """
    if not weights:
        raise InvalidInput("an alias needs at least one version, e.g. {3: 100}", field="weights")
    clean: dict[int, int] = {}
    for version, weight in weights.items():
        if not _is_int(version) or version < 1:
            raise InvalidInput(f"invalid version {version!r} in alias weights", field="weights")
        if not _is_int(weight) or weight < 1:
            raise InvalidInput(
                f"weight of version {version} must be a positive integer, got {weight!r}", field="weights"
            )
        _check_servable(model, version, statuses=statuses, field="weights")
        clean[version] = weight
    total = sum(clean.values())
    if total != TOTAL_WEIGHT:
        raise InvalidInput(f"alias weights must sum to {TOTAL_WEIGHT}, got {total}", field="weights")
    return clean


def check_shadow(
    model: str,
    shadow: Shadow,
    *,
    weights: Mapping[int, int],
    statuses: Mapping[int, Standing],
    signatures: Mapping[int, ModelSignature],
) -> Shadow:
    """A shadow for an alias with ``weights``: a share of 1..100 percent, to a servable version outside the
    weights that takes the same inputs as every weighted version (so a mirrored request fits it as is)."""
    if not _is_int(shadow.share) or not 1 <= shadow.share <= TOTAL_WEIGHT:
        raise InvalidInput(
            f"shadow share must be a whole percentage from 1 to {TOTAL_WEIGHT}, got {shadow.share!r}",
            field="shadow",
        )
    version = shadow.version
    if not _is_int(version) or version < 1:
        raise InvalidInput(f"invalid shadow version {version!r}", field="shadow")
    _check_servable(model, version, statuses=statuses, field="shadow")
    if version in weights:
        raise InvalidInput(
            f"version {version} cannot shadow an alias that already sends it {weights[version]}% of its traffic",
            field="shadow",
            version=version,
        )
    for weighted in sorted(weights):
        problem = _inputs_differ(signatures[version], signatures[weighted])
        if problem:
            raise InvalidInput(
                f"shadow version {version} of model {model!r} takes other inputs than version {weighted}: {problem}",
                field="shadow",
                version=version,
            )
    return shadow


def pick_version(weights: Mapping[int, int], *, rng: random.Random) -> int:
    """One version drawn with probability proportional to its weight (deterministic for a seeded rng)."""
    versions = sorted(weights)
    point = rng.randrange(sum(weights[v] for v in versions))
    for version in versions:
        point -= weights[version]
        if point < 0:
            return version
    raise AssertionError("unreachable: point < total weight")  # pragma: no cover


def _check_servable(model: str, version: int, *, statuses: Mapping[int, Standing], field: str) -> None:
    status = statuses.get(version)
    if status is None:
        known = ", ".join(str(v) for v, s in sorted(statuses.items()) if s != "deleted") or "none"
        message = f"model {model!r} has no version {version} (versions: {known})"
        raise InvalidInput(message, field=field, version=version)
    if status in ("archived", "deleted"):
        raise InvalidInput(
            f"version {version} of model {model!r} is {status} and cannot receive traffic", field=field, version=version
        )


def _inputs_differ(shadow: ModelSignature, weighted: ModelSignature) -> str | None:
    """What differs between two signatures' inputs (tensors, then feature names when both have them)."""
    if shadow.inputs != weighted.inputs:
        return f"{_describe(shadow.inputs)} vs {_describe(weighted.inputs)}"
    if shadow.feature_names and weighted.feature_names and shadow.feature_names != weighted.feature_names:
        return f"feature names {list(shadow.feature_names)} vs {list(weighted.feature_names)}"
    return None


def _describe(inputs: tuple[TensorSpec, ...]) -> str:
    """``x float32[N, 4]`` for each input (``N``: a dynamic dimension)."""
    dims = (", ".join("N" if d is None else str(d) for d in spec.shape) for spec in inputs)
    return ", ".join(f"{spec.name} {spec.dtype}[{shape}]" for spec, shape in zip(inputs, dims, strict=True))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
