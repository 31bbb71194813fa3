"""Registry changes reach every API process and worker pool at once: the announcement, the polled revision when
an announcement was missed, and Redis down (writes still commit; catalogs fall back to their periodic reload)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis.asyncio as aioredis
import structlog
from apikit import Api, closed_port, register_model, running, tuned
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from worker_harness import (
    affine_model,
    enqueue,
    make_request,
    partition,
    register,
    running_pool,
    wait_for,
    wait_results,
    worker_settings,
)

from inferq.api.catalog import ModelCatalog
from inferq.contracts.models import ModelInfo
from inferq.contracts.names import Names
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.catalog_revisions import CatalogNotifier, RevisionWatcher
from inferq.workers.pool import WorkerPool
from inferq.workers.selection import Selection

pytestmark = pytest.mark.integration
Sessions = async_sessionmaker[AsyncSession]


def _weights(infos: list[ModelInfo], model: str, alias: str) -> dict[int, int] | None:
    """An alias's weights in a catalog's current snapshot (``None``: no such alias)."""
    info = next((i for i in infos if i.name == model), None)
    found = [a for a in info.aliases if a.name == alias] if info else []
    return found[0].weights if found else None


def _seen(api: Api, model: str, alias: str) -> dict[int, int] | None:
    return _weights(api.app.state.services.catalog.models(), model, alias)


def _only_announcements(settings: Settings) -> Settings:
    """API settings under which a catalog reloads only when a change is announced (or the revision moves)."""
    return tuned(settings, api__catalog_refresh_s=3600.0, api__catalog_miss_refresh_s=3600.0)


async def test_two_api_processes_agree_on_a_change_made_through_either(
    settings: Settings, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name)
    async with running(_only_announcements(settings)) as one, running(_only_announcements(settings)) as other:
        assert _seen(other, model_name, "canary") is None
        put = await one.client.put(f"/v1/models/{model_name}/aliases/canary", json={"weights": {"1": 50, "2": 50}})
        await wait_for(lambda: _is(_seen(other, model_name, "canary"), {1: 50, 2: 50}), what="the other's catalog")
        routed = await other.client.post(
            f"/v1/models/{model_name}@canary/predict", json={"inputs": [[1, 2, 3, 4]]}, headers={"Prefer": "wait=0"}
        )
        deleted = await other.client.delete(f"/v1/models/{model_name}/aliases/canary")
        await wait_for(lambda: _is(_seen(one, model_name, "canary"), None), what="the first one's catalog")
        patched = await one.client.patch(f"/v1/models/{model_name}/versions/1", json={"status": "deprecated"})
        catalog = other.app.state.services.catalog
        await wait_for(lambda: _is(_status(catalog, model_name, 1), "deprecated"), what="the status change")
    assert put.status_code == 200
    assert (routed.status_code, routed.json()["version"] in (1, 2)) == (202, True)
    assert deleted.status_code == 204
    assert patched.status_code == 200


async def test_a_missed_announcement_is_found_by_polling_the_revision(
    settings: Settings, registry: Registry, redis_client: aioredis.Redis, model_name: str
) -> None:
    await register_model(registry, model_name)
    names = Names(settings.services.key_prefix)
    async with running(_only_announcements(settings)) as api:
        await wait_for(lambda: _subscribed(redis_client, names), what="the catalog to subscribe")
        await asyncio.sleep(1.0)  # its first reload (a subscription counts as a change) and polls are behind it
        await registry.set_alias(model_name, "canary", weights={2: 100})  # committed; this registry announces nothing
        await asyncio.sleep(1.5)  # three polls: the revision did not move, so nothing reloaded
        unseen = _seen(api, model_name, "canary")
        await redis_client.incr(names.catalog_revision())  # as if its PUBLISH was lost
        await wait_for(lambda: _is(_seen(api, model_name, "canary"), {2: 100}), what="the polled revision")
    assert unseen is None


async def test_with_redis_down_writes_commit_and_catalogs_fall_back_to_their_refresh(
    settings: Settings, sessionmaker: Sessions, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name)
    names = Names(settings.services.key_prefix)
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=0.5)
    notifying = Registry(sessionmaker, on_change=CatalogNotifier(dead, names=names).changed)
    catalog = ModelCatalog(Registry(sessionmaker), refresh_s=0.2, changes=RevisionWatcher(dead, names=names))
    await catalog.start()
    try:
        with structlog.testing.capture_logs() as logs:
            written = await notifying.set_alias(model_name, "canary", weights={2: 100})
        await wait_for(lambda: _is(_weights(catalog.models(), model_name, "canary"), {2: 100}), what="a refresh")
    finally:
        await catalog.stop()
        await dead.aclose()
    assert written.weights == {2: 100}
    assert [e["model"] for e in logs if e["event"] == "catalog.notify_failed"] == [model_name]
    # The API too: Postgres is the truth, so a change is made (and answered) while Redis is unreachable.
    down = tuned(settings, services__redis_url=f"redis://127.0.0.1:{closed_port()}/0", services__socket_timeout_s=0.5)
    async with running(down) as api:
        put = await api.client.put(f"/v1/models/{model_name}/aliases/canary", json={"version": 1})
    assert (put.status_code, put.json()["weights"]) == (200, {"1": 100}), put.text
    assert (await registry.get_alias(model_name, "canary")).weights == {1: 100}


async def test_worker_pools_serve_announced_versions_and_drain_archived_and_deleted_ones(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis
) -> None:
    names = Names(settings.services.key_prefix)
    notifying = Registry(sessionmaker, on_change=CatalogNotifier(redis_client, names=names).changed)
    everything = Selection.parse(all_models=True, models=None)
    only_announced = worker_settings(settings, discovery_interval_s=3600.0)  # no periodic discovery to lean on
    async with running_pool(only_announced, sessionmaker, everything) as pool:
        first = await register(notifying, affine_model())
        await wait_for(lambda: _serves(pool, first.key), what="the announced version")
        request = make_request(first, {"x": np.ones((1, 4), np.float32)})
        await enqueue(redis_client, partition(settings, first), [request])
        assert (await wait_results(redis_client, settings, [request.id]))[request.id].status == "succeeded"

        await asyncio.sleep(1.0)  # the poll has read the announced revision: nothing more is coming
        unannounced = await register(registry, affine_model(), name=first.model)
        await asyncio.sleep(1.0)
        unseen = unannounced.key in pool.partitions
        await redis_client.incr(names.catalog_revision())  # as if its PUBLISH was lost
        await wait_for(lambda: _serves(pool, unannounced.key), what="the version found by polling the revision")

        third = await register(notifying, affine_model(), name=first.model)
        await wait_for(lambda: _serves(pool, third.key), what="the third version")
        await notifying.set_alias(first.model, "default", weights={third.version: 100})
        await notifying.set_status(first.model, first.version, "archived")
        await wait_for(lambda: _serves(pool, first.key, expected=False), what="the archived version to drain")
        await notifying.delete_version(first.model, unannounced.version)
        await wait_for(lambda: _serves(pool, unannounced.key, expected=False), what="the deleted version to drain")
        assert third.key in pool.partitions
    assert unseen is False


async def _subscribed(redis: aioredis.Redis, names: Names) -> bool:
    ((_, listeners),) = await redis.pubsub_numsub(names.catalog_channel())
    return int(listeners) >= 1


async def _is(value: object, expected: object) -> bool:
    return value == expected


async def _serves(pool: WorkerPool, key: str, *, expected: bool = True) -> bool:
    return (key in pool.partitions) == expected


def _status(catalog: ModelCatalog, model: str, version: int) -> str | None:
    info = next((i for i in catalog.models() if i.name == model), None)
    return next((v.status for v in info.versions if v.version == version), None) if info else None
