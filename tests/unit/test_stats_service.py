"""``StatsService`` without HTTP or Postgres: whose rows a caller reads, which model and version, bad requests."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest

from inferq.api.catalog import ModelCatalog
from inferq.api.stats import MAX_HOURS, StatsService
from inferq.contracts.auth import Limits, Principal, Scope
from inferq.contracts.models import ModelInfo, ModelSignature, ModelVersion, TensorSpec
from inferq.contracts.stats import Latency, ModelStats, TrafficStats
from inferq.errors import Forbidden, InvalidInput, ModelNotFound, VersionNotFound
from inferq.store.prediction_stats import PredictionStats

NOW = dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC)
SIGNATURE = ModelSignature(inputs=(TensorSpec(name="x", dtype="float32", shape=(None, 4)),), outputs=())
LIMITS = Limits(rate_per_s=1, burst=1, concurrency=1, max_rows=1, max_elements=1)


def version(n: int) -> ModelVersion:
    return ModelVersion(model="wine", version=n, status="active", signature=SIGNATURE, sha256="0" * 64,
                        size_bytes=1, created_at=NOW)  # fmt: skip


class Catalog:
    async def model(self, name: str) -> ModelInfo:
        if name != "wine":
            raise ModelNotFound(f"model {name!r} not found", model=name)
        return ModelInfo(name="wine", created_at=NOW, versions=(version(1), version(2)), aliases=())


class Store:
    """Remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    async def model_stats(self, model: str, **query: Any) -> ModelStats:
        self.asked.append({"model": model, **query})
        empty = TrafficStats(requests=0, rows=0, statuses={}, errors={}, error_rate=0.0, latency=Latency(), classes={})
        return ModelStats(model=model, version=query["version"], tenant=query["tenant"], since=NOW, until=NOW,
                          totals=empty, by_hour=())  # fmt: skip


def caller(tenant: str, *scopes: Scope) -> Principal:
    return Principal(key_id="k" * 16, tenant=tenant, scopes=frozenset(scopes), limits=LIMITS)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def service(store: Store) -> StatsService:
    return StatsService(catalog=cast(ModelCatalog, Catalog()), store=cast(PredictionStats, store), clock=lambda: NOW)


@pytest.mark.parametrize(
    ("who", "asked_for", "reads"),
    [
        (caller("acme", "predict"), None, "acme"),
        (caller("acme", "jobs"), "acme", "acme"),
        (caller("ops", "admin"), None, None),  # every tenant's
        (caller("ops", "admin"), "acme", "acme"),
        (caller("ops", "admin", "predict"), None, None),
    ],
)
async def test_a_key_reads_its_tenant_and_an_admin_key_any(
    service: StatsService, store: Store, who: Principal, asked_for: str | None, reads: str | None
) -> None:
    stats = await service.model_stats(who, "wine", hours=6, tenant=asked_for)
    assert store.asked == [{"model": "wine", "hours": 6, "now": NOW, "version": None, "tenant": reads}]
    assert stats.tenant == reads


async def test_another_tenant_needs_the_admin_scope(service: StatsService, store: Store) -> None:
    with pytest.raises(Forbidden) as raised:
        await service.model_stats(caller("acme", "predict", "jobs"), "wine", tenant="globex")
    assert raised.value.details["needs"] == ["admin"]
    assert store.asked == []


async def test_a_version_narrows_and_must_exist(service: StatsService, store: Store) -> None:
    await service.model_stats(caller("acme", "predict"), "wine@2")
    assert store.asked[0]["version"] == 2
    with pytest.raises(VersionNotFound):
        await service.model_stats(caller("acme", "predict"), "wine@3")
    assert len(store.asked) == 1


@pytest.mark.parametrize(
    ("model", "hours", "error"),
    [
        ("beer", 24, ModelNotFound),
        ("Not A Name", 24, ModelNotFound),
        ("wine@prod", 24, InvalidInput),  # an alias moves between versions: stats follow versions
        ("wine@0", 24, ModelNotFound),
        ("wine", 0, InvalidInput),
        ("wine", MAX_HOURS + 1, InvalidInput),
    ],
)
async def test_bad_requests_never_reach_the_store(
    service: StatsService, store: Store, model: str, hours: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await service.model_stats(caller("ops", "admin"), model, hours=hours)
    assert store.asked == []
