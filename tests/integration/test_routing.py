"""Routing in the predict path: sticky keys, the served version and deprecation in headers, fallback.

Splits and headers use stand-in workers (``Responder``); fallback uses real workers (``WorkerPool``),
whose alive keys say which versions have a consumer and whose failed loads mark a partition broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from apikit import Api, Responder, register_model, running, tuned
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from worker_harness import build, register, running_pool, select, wait_for, worker_settings

from inferq.contracts.models import ModelVersion
from inferq.contracts.names import Names
from inferq.engine import read_signature
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.workers.executor import BROKEN_TTL_S

pytestmark = pytest.mark.integration

ROW = [1.0, 2.0, 3.0, 4.5]
X = [[1.0, 2.0, 3.0, 4.0]]


@pytest.fixture
async def model(registry: Registry, model_name: str) -> str:
    """Versions 1 and 2 (``default`` → 1, ``prod`` → 2) of the stand-in classifier."""
    await register_model(registry, model_name)
    return model_name


@contextlib.asynccontextmanager
async def unlimited(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose key's quotas thousands of requests do not reach (a ``Responder`` frees no in-flight slot)."""
    key = await api.key_for(f"t-{secrets.token_hex(4)}", rate_per_s=1e6, burst=1_000_000, concurrency=1_000_000)
    async with api.as_key(key) as client:
        yield client


async def served_versions(client: httpx.AsyncClient, path: str, keys: Sequence[str | None]) -> list[int]:
    """The version that answered each request (200s only), 50 at a time; body and header must agree."""
    found: list[int] = []
    for start in range(0, len(keys), 50):
        chunk = keys[start : start + 50]
        responses = await asyncio.gather(
            *(client.post(path, json={"inputs": [ROW]}, headers={"Prefer": "wait=10", **_key(key)}) for key in chunk)
        )
        for response in responses:
            assert response.status_code == 200, response.text
            version = response.json()["version"]
            assert response.headers["X-Model-Version"] == str(version)
            found.append(version)
    return found


def _key(key: str | None) -> dict[str, str]:
    return {} if key is None else {"X-Routing-Key": key}


async def test_a_routing_key_always_gets_the_same_version_and_keys_spread_like_the_weights(
    settings: Settings, redis_client: aioredis.Redis, registry: Registry, model: str
) -> None:
    await registry.set_alias(model, "canary", weights={1: 70, 2: 30})
    keys = [f"user-{i}" for i in range(1000)]
    async with (
        running(tuned(settings)) as api,
        Responder(redis_client, api.settings, model, 1),
        Responder(redis_client, api.settings, model, 2),
        unlimited(api) as client,
    ):
        first = await served_versions(client, f"/v1/models/{model}@canary/predict", keys)
        second = await served_versions(client, f"/v1/models/{model}@canary/predict", keys)
        # The V2 route reads the same header: the same keys get the same versions there.
        v2 = [
            await client.post(
                f"/v2/models/{model}@canary/infer",
                json=_infer_body(ROW, name="X"),
                headers={"Prefer": "respond-async", "X-Routing-Key": key},
            )
            for key in keys[:40]
        ]
    assert first == second  # 1,000 keys sent twice: not one switched version
    counts = Counter(first)
    assert set(counts) == {1, 2}
    assert abs(counts[1] - 700) < 75  # binomial sd 14.5: 5 sd
    assert {r.status_code for r in v2} <= {200, 202}  # respond-async: 202, or 200 when the result beat the answer
    assert [int(r.headers["X-Model-Version"]) for r in v2] == first[:40]
    assert [int(r.json()["model_version"]) for r in v2] == first[:40]


async def test_without_a_key_each_request_is_drawn_by_weight(
    settings: Settings, redis_client: aioredis.Redis, registry: Registry, model: str
) -> None:
    await registry.set_alias(model, "canary", weights={1: 70, 2: 30})
    async with (
        running(tuned(settings)) as api,
        Responder(redis_client, api.settings, model, 1),
        Responder(redis_client, api.settings, model, 2),
        unlimited(api) as client,
    ):
        # One key sent 100 times is one version 100 times; no key, both versions.
        pinned = await served_versions(client, f"/v1/models/{model}@canary/predict", ["same"] * 100)
        drawn = await served_versions(client, f"/v1/models/{model}@canary/predict", [None] * 600)
    assert len(set(pinned)) == 1
    counts = Counter(drawn)
    assert abs(counts[1] - 420) < 60  # binomial sd 11.2: over 5 sd
    assert counts[1] + counts[2] == 600


async def test_the_served_version_is_in_a_header_on_200_and_202(
    settings: Settings, redis_client: aioredis.Redis, model: str
) -> None:
    async with running(tuned(settings)) as api, Responder(redis_client, api.settings, model, 1):
        answered = await api.client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]})
        by_version = await api.client.post(f"/v1/models/{model}/versions/1/predict", json={"inputs": [ROW]})
        accepted = await api.client.post(  # no worker for version 2
            f"/v1/models/{model}@prod/predict", json={"inputs": [ROW]}, headers={"Prefer": "wait=0"}
        )
        v2_accepted = await api.client.post(
            f"/v2/models/{model}@prod/infer", json=_infer_body(ROW, name="X"), headers={"Prefer": "respond-async"}
        )
    assert (answered.status_code, answered.json()["version"], answered.headers["X-Model-Version"]) == (200, 1, "1")
    assert (by_version.status_code, by_version.headers["X-Model-Version"]) == (200, "1")
    assert (accepted.status_code, accepted.json()["version"], accepted.headers["X-Model-Version"]) == (202, 2, "2")
    assert (v2_accepted.status_code, v2_accepted.headers["X-Model-Version"]) == (202, "2")
    for response in (answered, by_version, accepted, v2_accepted):
        assert "Deprecation" not in response.headers
        assert "X-Model-Fallback" not in response.headers
        assert "fallback" not in response.json()


async def test_a_deprecated_version_answers_with_a_deprecation_header(
    settings: Settings, redis_client: aioredis.Redis, registry: Registry, model: str
) -> None:
    deprecated = await registry.set_status(model, 2, "deprecated")
    since = f"@{int(deprecated.created_at.timestamp())}"
    async with (
        running(tuned(settings)) as api,
        Responder(redis_client, api.settings, model, 1),
        Responder(redis_client, api.settings, model, 2),
    ):
        old = await api.client.post(f"/v1/models/{model}@prod/predict", json={"inputs": [ROW]})
        pinned = await api.client.post(f"/v1/models/{model}/versions/2/predict", json={"inputs": [ROW]})
        current = await api.client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]})
        v2_old = await api.client.post(
            f"/v2/models/{model}@prod/infer", json=_infer_body(ROW, name="X"), headers={"Prefer": "respond-async"}
        )
        v2_current = await api.client.post(
            f"/v2/models/{model}/infer", json=_infer_body(ROW, name="X"), headers={"Prefer": "respond-async"}
        )
    for response in (old, pinned, v2_old):
        assert response.status_code in (200, 202), response.text
        assert response.headers["Deprecation"] == since
        assert response.headers["Link"] == f'</v1/models/{model}/versions/2>; rel="deprecation"'
        assert response.headers["X-Model-Version"] == "2"
    for response in (current, v2_current):
        assert response.status_code in (200, 202), response.text
        assert "Deprecation" not in response.headers
        assert "Link" not in response.headers
        assert response.headers["X-Model-Version"] == "1"


async def test_an_overlong_routing_key_is_a_400(settings: Settings, model: str) -> None:
    headers = {"X-Routing-Key": "k" * 257}
    async with running(tuned(settings)) as api:
        hot = await api.client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]}, headers=headers)
        routed = await api.client.post(
            f"/v1/models/{model}/versions/1/predict", json={"inputs": [ROW]}, headers=headers
        )
        v2 = await api.client.post(f"/v2/models/{model}/infer", json=_infer_body(ROW, name="X"), headers=headers)
    for response in (hot, routed):
        assert response.status_code == 400
        assert response.json()["code"] == "malformed_request"
        assert response.json()["detail"] == "X-Routing-Key must be at most 256 characters, got 257"
    assert v2.status_code == 400
    assert v2.json() == {"error": "X-Routing-Key must be at most 256 characters, got 257"}


# Fallback, with real workers.


def affine(scale: float) -> bytes:
    """``y = scale·x + 1`` on float32 ``[None, 4]``: each scale its own artifact."""
    return build(
        [("x", TensorProto.FLOAT, [None, 4])],
        [("y", TensorProto.FLOAT, [None, 4])],
        [helper.make_node("Mul", ["x", "k"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
        [
            numpy_helper.from_array(np.array(scale, dtype=np.float32), "k"),
            numpy_helper.from_array(np.array(1, dtype=np.float32), "one"),
        ],
    )


async def two_versions(registry: Registry, name: str, *, loadable: bool = True) -> tuple[ModelVersion, ModelVersion]:
    """Version 1 (``y = 2x + 1``) and version 2 (``y = 3x + 1``, or bytes no runtime loads, with its signature)."""
    first = await register(registry, affine(2), name=name)
    second_bytes = affine(3) if loadable else b"not an onnx model " + secrets.token_bytes(8)
    second = await registry.register(name=name, model=second_bytes, signature=read_signature(affine(3)))
    return first, second


def key_of(settings: Settings, version: ModelVersion, kind: str) -> str:
    names = Names(settings.services.key_prefix)
    partition = names.partition(version.model, version.version)
    return names.alive(partition) if kind == "alive" else names.broken(partition)


async def wait_alive(redis: aioredis.Redis, settings: Settings, *versions: ModelVersion) -> None:
    keys = [key_of(settings, v, "alive") for v in versions]

    async def alive() -> bool:
        return int(await redis.exists(*keys)) == len(keys)

    await wait_for(alive, timeout_s=30, what="workers' alive keys")


def fallbacks(api: Api, model: str, *, to: int, reason: str, source: int = 2) -> float:
    labels = {"model": model, "from_version": str(source), "to_version": str(to), "reason": reason}
    value = api.app.state.metrics.registry.get_sample_value("inferq_fallbacks_total", labels)
    return float(value or 0.0)


def _infer_body(row: list[float], *, name: str = "x") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": [1, len(row)], "datatype": "FP32", "data": row}]}


async def test_a_version_without_a_consumer_falls_back_to_the_previous_active_one(
    settings: Settings,
    redis_client: aioredis.Redis,
    registry: Registry,
    sessionmaker: async_sessionmaker[AsyncSession],
    model_name: str,
) -> None:
    first, _ = await two_versions(registry, model_name)
    await registry.set_alias(model_name, "default", weights={2: 100}, fallback=True)
    async with running_pool(worker_settings(settings), sessionmaker, select(first)):  # nothing consumes version 2
        await wait_alive(redis_client, settings, first)
        async with running(tuned(settings)) as api:
            v1 = await api.client.post(
                f"/v1/models/{model_name}/predict", json={"inputs": X}, headers={"Prefer": "wait=10"}
            )
            v2 = await api.client.post(
                f"/v2/models/{model_name}/infer", json=_infer_body(X[0]), headers={"Prefer": "wait=10"}
            )
            pinned = await api.client.post(  # an explicit version never falls back: it waits for its worker
                f"/v1/models/{model_name}@2/predict", json={"inputs": X}, headers={"Prefer": "wait=0"}
            )
            counted = fallbacks(api, model_name, to=1, reason="not_ready")
    assert v1.status_code == 200, v1.text
    body = v1.json()
    assert body["version"] == 1
    assert body["fallback"] == {"from_version": 2, "reason": "not_ready"}
    assert body["predictions"] == [{"outputs": {"y": [3.0, 5.0, 7.0, 9.0]}}]  # 2x + 1: version 1 ran it
    assert (v1.headers["X-Model-Version"], v1.headers["X-Model-Fallback"]) == ("1", "2")
    assert v2.status_code == 200, v2.text
    assert v2.json()["model_version"] == "1"
    assert (v2.headers["X-Model-Version"], v2.headers["X-Model-Fallback"]) == ("1", "2")
    assert pinned.status_code == 202
    assert (pinned.json()["version"], pinned.headers["X-Model-Version"]) == (2, "2")
    assert "X-Model-Fallback" not in pinned.headers
    assert counted == 2.0


@pytest.mark.parametrize("case", ["fallback off", "only a deprecated version below"])
async def test_without_a_fallback_the_request_waits_for_its_own_version(
    settings: Settings,
    redis_client: aioredis.Redis,
    registry: Registry,
    sessionmaker: async_sessionmaker[AsyncSession],
    model_name: str,
    case: str,
) -> None:
    first, _ = await two_versions(registry, model_name)
    await registry.set_alias(model_name, "default", weights={2: 100}, fallback=case != "fallback off")
    if case == "only a deprecated version below":
        await registry.set_status(model_name, 1, "deprecated")
    async with running_pool(worker_settings(settings), sessionmaker, select(first)):
        await wait_alive(redis_client, settings, first)
        async with running(tuned(settings)) as api:
            response = await api.client.post(
                f"/v1/models/{model_name}/predict", json={"inputs": X}, headers={"Prefer": "wait=0.3"}
            )
            counted = fallbacks(api, model_name, to=1, reason="not_ready")
    assert response.status_code == 202, response.text
    assert response.json()["version"] == 2
    assert "fallback" not in response.json()
    assert response.headers["X-Model-Version"] == "2"
    assert "X-Model-Fallback" not in response.headers
    assert counted == 0.0


async def test_a_fallback_request_carries_the_version_it_fell_back_from_to_the_worker(
    settings: Settings, redis_client: aioredis.Redis, registry: Registry, model: str
) -> None:
    await registry.set_alias(model, "default", weights={2: 100}, fallback=True)
    names = Names(settings.services.key_prefix)
    await redis_client.set(names.alive(names.partition(model, 1)), "stand-in", ex=60)  # what upkeep writes
    async with running(tuned(settings)) as api, Responder(redis_client, api.settings, model, 1) as worker:
        response = await api.client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]})
    assert response.status_code == 200, response.text
    assert response.json()["fallback"] == {"from_version": 2, "reason": "not_ready"}
    assert [(r.version, r.fallback_from) for r in worker.seen] == [(1, 2)]  # for the prediction log


async def test_a_version_whose_model_fails_to_load_falls_back_once_marked_broken(
    settings: Settings,
    redis_client: aioredis.Redis,
    registry: Registry,
    sessionmaker: async_sessionmaker[AsyncSession],
    model_name: str,
) -> None:
    first, second = await two_versions(registry, model_name, loadable=False)
    await registry.set_alias(model_name, "default", weights={2: 100}, fallback=True)
    broken = key_of(settings, second, "broken")
    async with running_pool(worker_settings(settings), sessionmaker, select(first, second)):
        await wait_alive(redis_client, settings, first, second)  # both consumed: "ready", until version 2 loads
        async with running(tuned(settings)) as api:
            failed = await api.client.post(
                f"/v1/models/{model_name}@2/predict", json={"inputs": X}, headers={"Prefer": "wait=10"}
            )
            assert failed.status_code == 422, failed.text  # what the worker says of bytes that are not ONNX
            assert failed.json()["code"] == "invalid_model"

            async def marked() -> bool:
                return bool(await redis_client.exists(broken))

            await wait_for(marked, what="the broken mark")
            assert 0 < await redis_client.ttl(broken) <= BROKEN_TTL_S
            # The API's view reads the mark within a refresh: meanwhile the alias may still reach version 2.
            answers: list[httpx.Response] = []

            async def fell_back() -> bool:
                answers.append(
                    await api.client.post(
                        f"/v1/models/{model_name}/predict", json={"inputs": X}, headers={"Prefer": "wait=10"}
                    )
                )
                return "fallback" in answers[-1].json()

            await wait_for(fell_back, what="a fallback")
            answers += [
                await api.client.post(
                    f"/v1/models/{model_name}/predict", json={"inputs": X}, headers={"Prefer": "wait=10"}
                )
                for _ in range(3)
            ]
            counted = fallbacks(api, model_name, to=1, reason="load_failed")
    before, after = answers[:-4], answers[-4:]
    assert all(r.status_code == 422 and r.json()["code"] == "invalid_model" for r in before)
    for response in after:
        assert response.status_code == 200, response.text
        assert response.json()["fallback"] == {"from_version": 2, "reason": "load_failed"}
        assert response.json()["predictions"] == [{"outputs": {"y": [3.0, 5.0, 7.0, 9.0]}}]
        assert (response.headers["X-Model-Version"], response.headers["X-Model-Fallback"]) == ("1", "2")
    assert counted == 4.0


async def test_a_model_that_loads_clears_its_broken_mark(
    settings: Settings,
    redis_client: aioredis.Redis,
    registry: Registry,
    sessionmaker: async_sessionmaker[AsyncSession],
    model_name: str,
) -> None:
    first = await register(registry, affine(2), name=model_name)
    broken = key_of(settings, first, "broken")
    await redis_client.set(broken, "an earlier failure", ex=60)
    async with running_pool(worker_settings(settings), sessionmaker, select(first)):
        async with running(tuned(settings)) as api:
            response = await api.client.post(
                f"/v1/models/{model_name}@1/predict", json={"inputs": X}, headers={"Prefer": "wait=10"}
            )
        assert response.status_code == 200, response.text
        assert not await redis_client.exists(broken)
