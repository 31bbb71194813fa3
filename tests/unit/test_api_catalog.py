"""The API's model catalog: in-memory resolution, weighted aliases, rate-limited reloads, outages."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
from collections import Counter

import pytest

from inferq.api.catalog import ModelCatalog
from inferq.contracts.models import Alias, ModelInfo, ModelRef, ModelSignature, ModelVersion, TensorSpec
from inferq.errors import AliasNotFound, ModelNotFound, ServiceUnavailable, VersionNotFound

SIGNATURE = ModelSignature(inputs=(TensorSpec(name="X", dtype="float32", shape=(None, 2)),), outputs=())
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _model(name: str, *, statuses: dict[int, str], aliases: dict[str, dict[int, int]]) -> ModelInfo:
    return ModelInfo(
        name=name,
        created_at=NOW,
        versions=tuple(
            ModelVersion(
                model=name, version=v, status=s, signature=SIGNATURE, sha256="0" * 64, size_bytes=1, created_at=NOW
            )  # type: ignore[arg-type]
            for v, s in statuses.items()
        ),
        aliases=tuple(Alias(model=name, name=a, weights=w) for a, w in aliases.items()),
    )


class FakeRegistry:
    """``list_models`` from a list the test edits; counts calls; can be made to fail like Postgres down."""

    def __init__(self, models: list[ModelInfo]) -> None:
        self.models = models
        self.calls = 0
        self.down = False

    async def list_models(self) -> list[ModelInfo]:
        self.calls += 1
        if self.down:
            raise ServiceUnavailable("database unreachable")
        return list(self.models)


WINE = _model(
    "wine",
    statuses={1: "active", 2: "active", 3: "archived"},
    aliases={"default": {1: 100}, "canary": {1: 90, 2: 10}, "old": {3: 100}},
)


async def _catalog(registry: FakeRegistry, **kwargs: float) -> ModelCatalog:
    options = {"refresh_s": 3600.0, "miss_refresh_s": 0.05, **kwargs}
    catalog = ModelCatalog(registry, rng=random.Random(7), **options)  # type: ignore[arg-type]
    await catalog.start()
    return catalog


async def test_references_resolve_in_memory_without_touching_the_registry() -> None:
    registry = FakeRegistry([WINE])
    catalog = await _catalog(registry)
    try:
        assert (await catalog.resolve(ModelRef.parse("wine"))).version == 1
        assert (await catalog.resolve(ModelRef.parse("wine@2"))).version == 2
        picks = Counter([(await catalog.resolve(ModelRef.parse("wine@canary"))).version for _ in range(2000)])
        assert registry.calls == 1
    finally:
        await catalog.stop()
    assert set(picks) == {1, 2}
    assert 100 < picks[2] < 300  # 10% of 2000, give or take


@pytest.mark.parametrize(
    ("ref", "error", "message"),
    [
        ("beer", ModelNotFound, "model 'beer' not found"),
        ("wine@9", VersionNotFound, "versions: 1, 2, 3 (archived)"),
        ("wine@3", VersionNotFound, "archived"),
        ("wine@prod", AliasNotFound, "aliases: default, canary, old"),
        ("wine@old", VersionNotFound, "only at archived versions"),
    ],
)
async def test_misses_reload_once_then_say_what_is_missing(ref: str, error: type[Exception], message: str) -> None:
    registry = FakeRegistry([WINE])
    catalog = await _catalog(registry)
    try:
        with pytest.raises(error, match=re.escape(message)):
            await catalog.resolve(ModelRef.parse(ref))
    finally:
        await catalog.stop()
    assert registry.calls == 2  # the start, and one reload for the miss


async def test_a_version_registered_after_the_last_load_is_found_on_its_first_request() -> None:
    registry = FakeRegistry([WINE])
    catalog = await _catalog(registry)
    try:
        registry.models = [_model("wine", statuses={1: "active", 4: "active"}, aliases={"default": {4: 100}})]
        assert (await catalog.resolve(ModelRef.parse("wine@4"))).version == 4
        assert (await catalog.resolve(ModelRef.parse("wine"))).version == 4
    finally:
        await catalog.stop()


async def test_concurrent_misses_share_one_reload_at_most_once_per_interval() -> None:
    registry = FakeRegistry([WINE])
    catalog = await _catalog(registry, miss_refresh_s=0.3)
    try:
        results = await asyncio.gather(
            *(catalog.resolve(ModelRef.parse(f"nope{i}")) for i in range(20)), return_exceptions=True
        )
        assert registry.calls == 2
        with pytest.raises(ModelNotFound):
            await catalog.resolve(ModelRef.parse("nope"))
    finally:
        await catalog.stop()
    assert all(isinstance(r, ModelNotFound) for r in results)
    assert registry.calls == 3


async def test_postgres_down_keeps_the_last_snapshot_serving() -> None:
    registry = FakeRegistry([WINE])
    catalog = await _catalog(registry, refresh_s=0.01)
    try:
        registry.down = True
        await asyncio.sleep(0.05)  # several failed periodic refreshes
        assert registry.calls > 2
        assert (await catalog.resolve(ModelRef.parse("wine@2"))).version == 2
        with pytest.raises(ModelNotFound):  # a miss still answers from the snapshot, not a 503
            await catalog.resolve(ModelRef.parse("beer"))
        assert [m.name for m in catalog.models()] == ["wine"]
    finally:
        await catalog.stop()


async def test_no_snapshot_at_all_is_unavailable_until_postgres_answers() -> None:
    registry = FakeRegistry([WINE])
    registry.down = True
    catalog = await _catalog(registry)
    try:
        with pytest.raises(ServiceUnavailable):
            await catalog.resolve(ModelRef.parse("wine"))
        registry.down = False
        assert (await catalog.resolve(ModelRef.parse("wine"))).version == 1
    finally:
        await catalog.stop()
