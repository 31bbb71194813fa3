"""Redis or Postgres down or hung: fast 503 problems and honest health checks, never a hang."""

from __future__ import annotations

import asyncio
import time

import pytest
from apikit import closed_port, register_model, running, silent_server, tuned

from inferq.settings import Settings
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration

BODY = {"inputs": [[1.0, 2.0, 3.0, 4.0]]}


@pytest.fixture
async def model(registry: Registry, model_name: str) -> str:
    await register_model(registry, model_name)
    return model_name


async def test_health_ready_is_200_when_redis_and_postgres_answer(settings: Settings, migrated_db: str) -> None:
    async with running(tuned(settings)) as api:
        live = await api.client.get("/health/live")
        ready = await api.client.get("/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"redis": "ok", "postgres": "ok"}}


async def test_unreachable_redis_is_a_fast_503_everywhere_it_is_needed(settings: Settings, model: str) -> None:
    down = tuned(settings, services__redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with running(down) as api:
        started = time.monotonic()
        response = await asyncio.wait_for(api.client.post(f"/v1/models/{model}/predict", json=BODY), timeout=10)
        elapsed = time.monotonic() - started
        polled = await api.client.get("/v1/predictions/" + "a" * 32)
        ready = await api.client.get("/health/ready")
        live = await api.client.get("/health/live")
        models = await api.client.get("/v1/models/" + model)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "service_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert elapsed < 10
    assert polled.status_code == 503
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["postgres"] == "ok"
    assert checks["redis"] != "ok"
    assert live.status_code == 200
    # The catalog lives in Postgres: models are still listed, and none reads as ready.
    assert models.status_code == 200
    assert [v["ready"] for v in models.json()["versions"]] == [False, False]


async def test_hung_redis_is_a_503_within_the_socket_timeout(settings: Settings, model: str) -> None:
    async with silent_server() as port:
        hung = tuned(settings, services__redis_url=f"redis://127.0.0.1:{port}/0", services__socket_timeout_s=0.3)
        async with running(hung) as api:
            started = time.monotonic()
            response = await asyncio.wait_for(api.client.post(f"/v1/models/{model}/predict", json=BODY), timeout=10)
            elapsed = time.monotonic() - started
            ready = await asyncio.wait_for(api.client.get("/health/ready"), timeout=10)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "service_unavailable"
    assert elapsed < 10
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] != "ok"


async def test_unreachable_postgres_is_a_503_not_a_404(settings: Settings, model: str) -> None:
    down = tuned(settings, services__database_url=f"postgresql://nobody@127.0.0.1:{closed_port()}/none")
    async with running(down) as api:
        response = await asyncio.wait_for(api.client.post(f"/v1/models/{model}/predict", json=BODY), timeout=10)
        ready = await api.client.get("/health/ready")
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "service_unavailable"
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] == "ok"
    assert ready.json()["checks"]["postgres"] != "ok"
