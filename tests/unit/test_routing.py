"""Routing: the sticky choice among an alias's versions, the response headers, and whom a fallback picks."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import msgspec
import pytest

from inferq.api.catalog import ModelCatalog
from inferq.api.metrics import Metrics
from inferq.api.readiness import ReadinessView, Reason
from inferq.api.routing import Route, Router, route_headers, routing_key, sticky_version
from inferq.contracts.models import Alias, ModelInfo, ModelRef, ModelSignature, ModelVersion, TensorSpec, VersionStatus
from inferq.errors import MalformedRequest

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
FOUR = ModelSignature(inputs=(TensorSpec(name="X", dtype="float32", shape=(None, 4)),), outputs=())
FIVE = ModelSignature(inputs=(TensorSpec(name="X", dtype="float32", shape=(None, 5)),), outputs=())
KEYS = [f"user-{i}" for i in range(10_000)]


def test_the_same_key_always_gets_the_same_version() -> None:
    weights = {2: 50, 3: 50}
    first = [sticky_version("wine", "prod", weights, key=k) for k in KEYS[:1000]]
    assert first == [sticky_version("wine", "prod", dict(weights), key=k) for k in KEYS[:1000]]
    # Another alias or model hashes elsewhere: not the same split of the same keys.
    assert first != [sticky_version("wine", "canary", weights, key=k) for k in KEYS[:1000]]


def test_keys_spread_like_the_weights() -> None:
    counts = Counter(sticky_version("wine", "prod", {1: 70, 2: 25, 3: 5}, key=k) for k in KEYS)
    # Binomial sd over 10,000 keys is at most 46: 4.5 sd either way.
    assert abs(counts[1] - 7000) < 210
    assert abs(counts[2] - 2500) < 210
    assert abs(counts[3] - 500) < 100


def test_growing_a_canary_moves_only_the_keys_of_the_added_slice() -> None:
    before = {k: sticky_version("wine", "prod", {2: 95, 3: 5}, key=k) for k in KEYS}
    after = {k: sticky_version("wine", "prod", {2: 90, 3: 10}, key=k) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == 2 and after[k] == 3 for k in moved)  # nobody leaves the canary
    assert 300 < len(moved) < 700  # ~5 % of 10,000


def test_a_pinned_alias_sends_every_key_to_its_version() -> None:
    assert {sticky_version("wine", "prod", {4: 100}, key=k) for k in KEYS[:200]} == {4}


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("   ", None), (" u-1 ", "u-1")])
def test_routing_key_blank_is_none(raw: str | None, expected: str | None) -> None:
    assert routing_key(raw) == expected


def test_routing_key_over_256_characters_is_malformed() -> None:
    assert routing_key("k" * 256) == "k" * 256
    with pytest.raises(MalformedRequest, match="X-Routing-Key must be at most 256 characters, got 257") as caught:
        routing_key("k" * 257)
    assert caught.value.code == "malformed_request"
    assert caught.value.details == {"header": "X-Routing-Key"}


def _version(number: int, status: VersionStatus = "active", signature: ModelSignature = FOUR) -> ModelVersion:
    return ModelVersion(
        model="wine", version=number, status=status, signature=signature, sha256="0" * 64, size_bytes=1, created_at=NOW
    )


def test_headers_name_the_version_and_only_a_deprecated_one_carries_deprecation() -> None:
    assert route_headers(Route(_version(2))) == {"X-Model-Version": "2"}
    assert route_headers(Route(_version(2, "deprecated"))) == {
        "X-Model-Version": "2",
        "Deprecation": f"@{int(NOW.timestamp())}",
        "Link": '</v1/models/wine/versions/2>; rel="deprecation"',
    }
    fell_back = route_headers(Route(_version(1), fallback_from=3, reason="not_ready"))
    assert fell_back == {"X-Model-Version": "1", "X-Model-Fallback": "3"}


class FakeRegistry:
    def __init__(self, info: ModelInfo) -> None:
        self.info = info

    async def list_models(self) -> list[ModelInfo]:
        return [self.info]


class FakeReadiness:
    """What a ``ReadinessView`` would have read: fallback aliases, and the versions that cannot serve."""

    def __init__(self, *, aliases: set[str], failing: dict[int, Reason], watched: set[int]) -> None:
        self.aliases, self.bad, self.watched = aliases, failing, watched

    def falls_back(self, model: str, alias: str) -> bool:
        return alias in self.aliases

    def failing(self, model: str, version: int) -> Reason | None:
        return self.bad.get(version)

    def serves(self, model: str, version: int) -> bool:
        return version in self.watched and version not in self.bad

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def _router(
    versions: list[ModelVersion], readiness: FakeReadiness, weights: dict[int, int] | None = None
) -> tuple[Router, Metrics]:
    info = ModelInfo(
        name="wine",
        created_at=NOW,
        versions=tuple(versions),
        aliases=(
            Alias(model="wine", name="default", weights=weights or {5: 100}, fallback=True),
            Alias(model="wine", name="strict", weights={5: 100}),
        ),
    )
    catalog = ModelCatalog(FakeRegistry(info), refresh_s=3600, rng=random.Random(1))  # type: ignore[arg-type]
    await catalog.refresh()
    metrics = Metrics()
    router = Router(catalog=catalog, readiness=readiness, metrics=metrics)  # type: ignore[arg-type]
    return router, metrics


async def test_fallback_takes_the_highest_active_version_below_that_serves_the_same_inputs() -> None:
    versions = [
        _version(1),
        _version(2),  # the one: active, same inputs, serving
        _version(3, signature=FIVE),  # other inputs
        _version(4, "deprecated"),  # deprecated: not a fallback target
        _version(5),
        _version(6),  # above the chosen one
    ]
    readiness = FakeReadiness(aliases={"default"}, failing={5: "load_failed"}, watched={1, 2, 3, 4, 5, 6})
    router, metrics = await _router(versions, readiness)
    route = await router.route(ModelRef.parse("wine"))
    assert (route.version.version, route.fallback_from, route.reason) == (2, 5, "load_failed")
    labels = {"model": "wine", "from_version": "5", "to_version": "2", "reason": "load_failed"}
    assert metrics.registry.get_sample_value("inferq_fallbacks_total", labels) == 1.0

    readiness.bad = {5: "not_ready", 2: "not_ready"}  # the next one down that serves
    route = await router.route(ModelRef.parse("wine"))
    assert (route.version.version, route.fallback_from, route.reason) == (1, 5, "not_ready")


async def test_fallback_prefers_a_version_the_alias_already_weights() -> None:
    versions = [_version(1), _version(5), _version(6)]
    readiness = FakeReadiness(aliases={"default"}, failing={5: "not_ready"}, watched={1, 5, 6})
    router, _ = await _router(versions, readiness, weights={6: 95, 5: 5})  # a reverse canary: 5 is the small share
    for key in (f"user-{i}" for i in range(200)):
        route = await router.route(ModelRef.parse("wine"), key=key)
        assert route.version.version == 6  # never 1, which the alias does not route to
        assert route.fallback_from in (0, 5)


async def test_fallback_never_goes_to_a_version_whose_feature_names_differ() -> None:
    named = msgspec.structs.replace(FOUR, feature_names=("a", "b", "c", "d"))
    reordered = msgspec.structs.replace(FOUR, feature_names=("b", "a", "c", "d"))  # rows would be read wrongly
    versions = [_version(1, signature=named), _version(2, signature=reordered), _version(5, signature=named)]
    readiness = FakeReadiness(aliases={"default"}, failing={5: "not_ready"}, watched={1, 2, 5})
    router, _ = await _router(versions, readiness)
    route = await router.route(ModelRef.parse("wine"))
    assert (route.version.version, route.fallback_from) == (1, 5)


async def test_no_fallback_without_the_flag_for_explicit_versions_or_with_nothing_below() -> None:
    versions = [_version(1, "deprecated"), _version(5)]
    readiness = FakeReadiness(aliases={"default"}, failing={5: "not_ready"}, watched={1, 5})
    router, metrics = await _router(versions, readiness)
    assert await router.route(ModelRef.parse("wine")) == Route(versions[1])  # only a deprecated one below
    readiness.bad[1] = "not_ready"
    versions[0] = _version(1)
    router, metrics = await _router(versions, readiness)
    assert await router.route(ModelRef.parse("wine")) == Route(versions[1])  # the one below cannot serve either
    readiness.bad = {5: "not_ready"}
    assert await router.route(ModelRef.parse("wine@strict")) == Route(versions[1])  # fallback off
    assert await router.route(ModelRef.parse("wine@5")) == Route(versions[1])  # an explicit version
    assert (await router.route(ModelRef.parse("wine"))).version.version == 1
    readiness.watched = {5}  # a version the view has not read is not known to serve
    assert await router.route(ModelRef.parse("wine")) == Route(versions[1])
    assert (
        metrics.registry.get_sample_value(
            "inferq_fallbacks_total", {"model": "wine", "from_version": "5", "to_version": "1", "reason": "not_ready"}
        )
        == 1.0
    )


def test_readiness_view_starts_blind() -> None:
    view = ReadinessView(catalog=None, redis=None, names=None, timeout_s=1)  # type: ignore[arg-type]
    assert not view.falls_back("wine", "default")
    assert view.failing("wine", 1) is None
    assert not view.serves("wine", 1)
