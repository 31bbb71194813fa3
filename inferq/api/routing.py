"""Which version serves a prediction: the alias's weights (sticky with ``X-Routing-Key``), then fallback.

Without a routing key an alias's versions are drawn at random by weight. With one, the draw is a hash
of model, alias and key placed on the cumulative weights (versions in ascending order): the same key
gets the same version while the weights stay, and moving a canary from 5 % to 10 % moves only the keys
in the added slice. When the alias allows fallback and the chosen version cannot serve (no live
consumer, or its model failed to load: ``ReadinessView``), another version the alias weights that can
serve takes the request, else the highest active version below it that can (same inputs and feature
names either way); the route says so (body, ``X-Model-Fallback``, metric).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from inferq.api.catalog import ModelCatalog
from inferq.api.metrics import Metrics
from inferq.api.readiness import ReadinessView, Reason
from inferq.contracts.models import DEFAULT_ALIAS, ModelInfo, ModelRef, ModelVersion
from inferq.errors import MalformedRequest

log = structlog.get_logger(__name__)

ROUTING_KEY_HEADER = "X-Routing-Key"
MAX_ROUTING_KEY = 256


@dataclass(frozen=True, slots=True)
class Route:
    """The version that serves a call; ``fallback_from``: the version chosen first, which could not."""

    version: ModelVersion
    fallback_from: int = 0
    reason: Reason | None = None


def sticky_version(model: str, alias: str, weights: Mapping[int, int], *, key: str) -> int:
    """The version ``key`` always gets from these weights: a 64-bit hash scaled onto their cumulative sum."""
    digest = hashlib.blake2b(f"{model}\0{alias}\0{key}".encode(), digest_size=8).digest()
    versions = sorted(weights)
    point = (int.from_bytes(digest, "big") * sum(weights[v] for v in versions)) >> 64
    for version in versions:
        point -= weights[version]
        if point < 0:
            return version
    raise AssertionError("unreachable: point < total weight")  # pragma: no cover


def routing_key(value: str | None) -> str | None:
    """The ``X-Routing-Key`` header's value (blank = none); over 256 characters is a 400."""
    if value is None or not (value := value.strip()):
        return None
    if len(value) > MAX_ROUTING_KEY:
        raise MalformedRequest(
            f"{ROUTING_KEY_HEADER} must be at most {MAX_ROUTING_KEY} characters, got {len(value)}",
            header=ROUTING_KEY_HEADER,
        )
    return value


def route_headers(route: Route) -> dict[str, str]:
    """``X-Model-Version``; ``Deprecation`` (RFC 9745) + ``Link`` for a deprecated version; ``X-Model-Fallback``."""
    version = route.version
    headers = {"X-Model-Version": str(version.version)}
    if version.status == "deprecated":
        # NOTE: the registry keeps no time of the status change: the version's creation is the latest
        # time known to be at or before its deprecation (docs/models.md, "Routing and fallback").
        headers["Deprecation"] = f"@{int(version.created_at.timestamp())}"
        headers["Link"] = f'</v1/models/{version.model}/versions/{version.version}>; rel="deprecation"'
    if route.fallback_from:
        headers["X-Model-Fallback"] = str(route.fallback_from)
    return headers


class Router:
    """Resolves a call's model reference to a ``Route``, from memory only (catalog and readiness view)."""

    def __init__(self, *, catalog: ModelCatalog, readiness: ReadinessView, metrics: Metrics) -> None:
        self._catalog = catalog
        self._readiness = readiness
        self._metrics = metrics

    async def start(self) -> None:
        await self._readiness.start()

    async def stop(self) -> None:
        await self._readiness.stop()

    async def route(self, ref: ModelRef, *, key: str | None = None) -> Route:
        """The version ``ref`` names now; explicit versions (``name@3``) never fall back."""
        pick = None if key is None else functools.partial(sticky_version, key=key)
        version = await self._catalog.resolve(ref, pick=pick)
        if ref.version is not None or not self._readiness.falls_back(ref.name, ref.alias or DEFAULT_ALIAS):
            return Route(version)
        reason = self._readiness.failing(version.model, version.version)
        if reason is None:
            return Route(version)
        info = await self._catalog.model(ref.name)
        target = self._fallback(info, ref.alias or DEFAULT_ALIAS, version)
        if target is None:  # nothing else can serve: it queues for its own workers, as without fallback
            log.info("routing.no_fallback", model=version.model, version=version.version, reason=reason)
            return Route(version)
        self._metrics.count_fallback(
            model=version.model, from_version=version.version, to_version=target.version, reason=reason
        )
        return Route(target, fallback_from=version.version, reason=reason)

    def _fallback(self, info: ModelInfo, alias: str, chosen: ModelVersion) -> ModelVersion | None:
        """Who serves instead of ``chosen``: another version the alias weights (the heaviest that serves),
        else the highest active (not deprecated, not archived) version below it; same inputs, feature names
        included (rows are read by position: another order would answer wrongly, not fail).
        """
        weights = next((a.weights for a in info.aliases if a.name == alias), {})
        weighted = sorted((v for v in info.versions if v.version in weights), key=lambda v: -weights[v.version])
        previous = sorted(
            (v for v in info.versions if v.version < chosen.version and v.status == "active"),
            key=lambda v: v.version,
            reverse=True,
        )
        for candidate in [*weighted, *previous]:
            if candidate.version == chosen.version or candidate.status == "archived":
                continue
            same_inputs = (candidate.signature.inputs, candidate.signature.feature_names) == (
                chosen.signature.inputs,
                chosen.signature.feature_names,
            )
            if same_inputs and self._readiness.serves(candidate.model, candidate.version):
                return candidate
        return None
