"""Alias traffic weights: validation, and the weighted choice of a version."""

from __future__ import annotations

import random
from collections.abc import Mapping

from inferq.contracts.models import VersionStatus
from inferq.errors import InvalidInput

TOTAL_WEIGHT = 100


def check_weights(model: str, weights: Mapping[int, int], *, statuses: Mapping[int, VersionStatus]) -> dict[int, int]:
    """Weights that pin or split traffic: existing, non-archived versions; positive integers summing to 100.

    ``statuses`` are the model's versions; anything else is ``InvalidInput`` saying what is wrong.
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
        status = statuses.get(version)
        if status is None:
            known = ", ".join(str(v) for v in sorted(statuses)) or "none"
            raise InvalidInput(
                f"model {model!r} has no version {version} (versions: {known})",
                field="weights",
                version=version,
            )
        if status == "archived":
            raise InvalidInput(
                f"version {version} of model {model!r} is archived and cannot receive traffic",
                field="weights",
                version=version,
            )
        clean[version] = weight
    total = sum(clean.values())
    if total != TOTAL_WEIGHT:
        raise InvalidInput(f"alias weights must sum to {TOTAL_WEIGHT}, got {total}", field="weights")
    return clean


def pick_version(weights: Mapping[int, int], *, rng: random.Random) -> int:
    """One version drawn with probability proportional to its weight (deterministic for a seeded rng)."""
    versions = sorted(weights)
    point = rng.randrange(sum(weights[v] for v in versions))
    for version in versions:
        point -= weights[version]
        if point < 0:
            return version
    raise AssertionError("unreachable: point < total weight")  # pragma: no cover


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
