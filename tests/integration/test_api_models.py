"""Model listing: versions, signatures, aliases, readiness from the alive key; the catalog's refresh."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from apikit import SIGNATURE, register_model, running, tuned

from inferq.contracts.names import Names
from inferq.settings import Settings
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration


def _ready(model: dict[str, Any]) -> tuple[bool, list[bool]]:
    return model["ready"], [v["ready"] for v in model["versions"]]


async def test_ready_follows_the_partitions_alive_keys(
    settings: Settings, redis_client: aioredis.Redis, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name)
    names = Names(settings.services.key_prefix)
    alive = [names.alive(names.partition(model_name, v)) for v in (1, 2)]

    async def listed() -> dict[str, Any]:
        response = await api.client.get("/v1/models")
        assert response.status_code == 200
        (model,) = [m for m in response.json()["models"] if m["name"] == model_name]
        return model

    async with running(tuned(settings)) as api:
        assert _ready(await listed()) == (False, [False, False])
        await redis_client.set(alive[1], "worker-1", ex=30)  # v2 (prod) has a worker; default → v1 has none
        assert _ready(await listed()) == (False, [False, True])
        await redis_client.set(alive[0], "worker-1", ex=30)
        assert _ready(await listed()) == (True, [True, True])
        one = (await api.client.get(f"/v1/models/{model_name}")).json()
        assert _ready(one) == (True, [True, True])
        await redis_client.delete(*alive)
        assert _ready(await listed()) == (False, [False, False])


async def test_one_model_shows_versions_signature_and_aliases(
    settings: Settings, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name)
    async with running(tuned(settings)) as api:
        response = await api.client.get(f"/v1/models/{model_name}")
        missing = await api.client.get(f"/v1/models/nope-{model_name}")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == model_name
    assert [(v["version"], v["status"]) for v in body["versions"]] == [(1, "active"), (2, "active")]
    assert body["versions"][0]["signature"]["inputs"] == [{"name": "X", "dtype": "float32", "shape": [None, 4]}]
    assert body["versions"][0]["signature"]["feature_names"] == list(SIGNATURE.feature_names or ())
    assert {a["name"]: a["weights"] for a in body["aliases"]} == {"default": {"1": 100}, "prod": {"2": 100}}
    assert missing.status_code == 404
    assert missing.json()["code"] == "model_not_found"


async def test_versions_and_aliases_registered_after_start_are_found_without_restart(
    settings: Settings, redis_client: aioredis.Redis, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name)
    # A long periodic refresh: only the on-miss reload can find the new version in time.
    async with running(tuned(settings, api__catalog_refresh_s=3600.0)) as api:
        await registry.register(name=model_name, model=b"model-v3", signature=SIGNATURE, aliases=["canary"])
        by_version = await api.client.post(
            f"/v1/models/{model_name}@3/predict", json={"inputs": [[1, 2, 3, 4]]}, headers={"Prefer": "wait=0"}
        )
        by_alias = await api.client.post(
            f"/v1/models/{model_name}@canary/predict", json={"inputs": [[1, 2, 3, 4]]}, headers={"Prefer": "wait=0"}
        )
        await registry.set_alias(model_name, "canary", weights={2: 100})  # an alias's version cannot be archived
        await registry.set_status(model_name, 3, "archived")
        await api.app.state.services.catalog.refresh()
        archived = await api.client.post(f"/v1/models/{model_name}@3/predict", json={"inputs": [[1, 2, 3, 4]]})
        backlog = await redis_client.xlen(api.work_stream(model_name, 3))
    assert (by_version.status_code, by_version.json()["version"]) == (202, 3)
    assert (by_alias.status_code, by_alias.json()["version"]) == (202, 3)
    assert archived.status_code == 404
    assert archived.json()["details"]["status"] == "archived"
    assert backlog == 2
