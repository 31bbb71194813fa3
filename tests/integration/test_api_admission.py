"""Admission: a full partition answers 503 + Retry-After at once, and exactly its limit is queued."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis.asyncio as aioredis
from apikit import Api, register_model, running, tuned

from inferq.contracts.names import Names
from inferq.settings import Settings
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration

BODY = {"inputs": [[1.0, 2.0, 3.0, 4.0]]}


async def _burst(api: Api, model: str, count: int) -> list[httpx.Response]:
    return await asyncio.gather(
        *(
            api.client.post(f"/v1/models/{model}/predict", json=BODY, headers={"Prefer": "wait=0.3"})
            for _ in range(count)
        )
    )


async def test_limit_q_with_q_plus_k_concurrent_requests_rejects_exactly_k(
    settings: Settings, redis_client: aioredis.Redis, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name)
    limit, extra = 5, 3
    async with running(tuned(settings, queue__admission_limit=limit)) as api:
        responses = await _burst(api, model_name, limit + extra)
        backlog = await redis_client.xlen(api.work_stream(model_name, 1))
        metrics = (await api.client.get("/metrics")).text
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * limit + [503] * extra
    rejected = [r for r in responses if r.status_code == 503]
    assert {r.json()["code"] for r in rejected} == {"overloaded"}
    assert {r.headers["Retry-After"] for r in rejected} == {"1"}  # no drain rate measured yet
    assert rejected[0].json()["details"]["limit"] == limit
    assert backlog == limit
    assert f'inferq_api_predictions_total{{model="{model_name}",outcome="overloaded",version="1"}} 3.0' in metrics
    assert f'inferq_api_predictions_total{{model="{model_name}",outcome="accepted",version="1"}} 5.0' in metrics


async def test_a_version_override_sets_the_limit_and_retry_after_follows_the_drain_rate(
    settings: Settings, redis_client: aioredis.Redis, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name, overrides={"admission_limit": 2})
    names = Names(settings.services.key_prefix)
    await redis_client.set(names.rate(names.partition(model_name, 1)), "0.25")  # rows/s, as workers write it
    async with running(tuned(settings, queue__admission_limit=1000)) as api:
        responses = await _burst(api, model_name, 4)
        backlog = await redis_client.xlen(api.work_stream(model_name, 1))
    rejected = [r for r in responses if r.status_code == 503]
    assert len(rejected) == 2
    assert backlog == 2
    assert {r.headers["Retry-After"] for r in rejected} == {"8"}  # 2 queued / 0.25 rows/s
