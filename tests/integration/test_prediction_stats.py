"""The prediction log end to end: a real worker pool logs what it settles, ``GET /v1/models/{model}/stats``
reports it per tenant (an admin key sees all), and a worker keeps serving while Postgres is down."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
from apikit import running, tuned
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs
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
from worker_harness import select as serve

from inferq.cli.demo import build as build_demo
from inferq.embedded.postgres_server import EmbeddedPostgres
from inferq.settings import Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.migrate import upgrade
from inferq.store.registry import Registry
from inferq.store.tables import PredictionLogRow

pytestmark = pytest.mark.integration

Sessions = async_sessionmaker[AsyncSession]
SETOSA, VERSICOLOR, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]
WAIT = {"Prefer": "wait=10"}


def logged(settings: Settings, **log: Any) -> Settings:
    """``settings`` whose workers write the log every 50 ms (``log``: other PredictionLogSettings fields)."""
    section = msgspec.structs.replace(settings.prediction_log, prediction_log_flush_s=0.05, **log)
    return msgspec.structs.replace(settings, prediction_log=section)


async def log_rows(sessions: Sessions, model: str, *, tenant: str | None = None) -> list[PredictionLogRow]:
    query = select(PredictionLogRow).where(PredictionLogRow.model == model)
    if tenant is not None:
        query = query.where(PredictionLogRow.tenant == tenant)
    async with sessions() as session:
        return list((await session.execute(query)).scalars())


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = (round(float(v), 3) for v in np.percentile(np.array(values, dtype=np.float64), [50, 95, 99]))
    return {"p50": p50, "p95": p95, "p99": p99}


def classes_of(responses: list[httpx.Response]) -> Counter[str]:
    return Counter(
        p["class_name"] if p.get("class_name") is not None else str(p["label"])
        for r in responses
        for p in r.json()["predictions"]
    )


async def test_each_tenant_sees_its_own_traffic_and_an_admin_key_sees_all(
    settings: Settings, registry: Registry, sessionmaker: Sessions
) -> None:
    version = await register(registry, build_demo("iris", 1).onnx)
    model, run = version.model, secrets.token_hex(4)
    tenant_a, tenant_b = f"a-{run}", f"b-{run}"
    configured = logged(tuned(settings))
    predict = f"/v1/models/{model}/predict"
    async with running(configured) as api:
        key_a, key_b = await api.key_for(tenant_a, "predict"), await api.key_for(tenant_b, "predict")
        reader_b, admin = await api.key_for(tenant_b, "jobs"), await api.key_for(f"ops-{run}", "admin")
        async with api.as_key(key_a) as a, api.as_key(key_b) as b:
            late = await a.post(predict, json={"inputs": [SETOSA]}, headers={"Prefer": "respond-async",
                                                                              "Cancel-After": "1ms"})  # fmt: skip
            assert late.status_code == 202, late.text
            await asyncio.sleep(0.05)  # its deadline passes before any worker reads it
            async with running_pool(worker_settings(configured), sessionmaker, serve(version)):
                inputs_a = ([SETOSA], [VIRGINICA], [VERSICOLOR], [SETOSA, VIRGINICA, VIRGINICA])
                answers_a = [await a.post(predict, json={"inputs": rows}, headers=WAIT) for rows in inputs_a]
                answers_b = [await b.post(predict, json={"inputs": [row]}, headers=WAIT) for row in (SETOSA, SETOSA)]

                async def expired() -> bool:
                    return (await a.get(late.headers["Location"])).json()["status"] == "expired"

                await wait_for(expired, what="the late request expired")
                late_error = (await a.get(late.headers["Location"])).json()["error"]["code"]
            # the pool has stopped: closing it wrote everything it had buffered
            assert [r.status_code for r in answers_a + answers_b] == [200] * 6
            own = await a.get(f"/v1/models/{model}/stats")
            own_named = await a.get(f"/v1/models/{model}/stats", params={"tenant": tenant_a})
            others = await a.get(f"/v1/models/{model}/stats", params={"tenant": tenant_b})
        async with api.as_key(reader_b) as reader, api.as_key(admin) as operator:
            only_b = await reader.get(f"/v1/models/{model}/stats")  # the jobs scope reads stats too
            everyone = await operator.get(f"/v1/models/{model}/stats", params={"hours": 2})
            just_b = await operator.get(f"/v1/models/{model}/stats", params={"tenant": tenant_b})
            pinned = await operator.get(f"/v1/models/{model}@{version.version}/stats")

    assert own.status_code == 200, own.text
    stats = own.json()
    assert (stats["model"], stats["version"], stats["tenant"]) == (model, None, tenant_a)
    totals = stats["totals"]
    assert (totals["requests"], totals["rows"]) == (5, 7)
    assert totals["statuses"] == {"succeeded": 4, "expired": 1}
    assert totals["errors"] == {late_error: 1}
    assert totals["error_rate"] == 0.2
    assert Counter(totals["classes"]) == classes_of(answers_a)
    assert sum(h["requests"] for h in stats["by_hour"]) == 5  # one bucket, or two across an hour's turn
    rows_a = [r for r in await log_rows(sessionmaker, model, tenant=tenant_a) if r.status == "succeeded"]
    assert sorted(r.inference_ms for r in rows_a) == sorted(
        float(np.float32(r.json()["timings"]["inference_ms"])) for r in answers_a
    )  # what the worker answered is what it logged
    latency = totals["latency"]
    assert latency["queue_ms"] == percentiles([r.queue_ms for r in rows_a if r.queue_ms is not None])
    assert latency["inference_ms"] == percentiles([r.inference_ms for r in rows_a if r.inference_ms is not None])
    assert own_named.json() == stats

    assert (others.status_code, others.json()["code"]) == (403, "forbidden")
    assert only_b.status_code == 200, only_b.text
    assert (only_b.json()["tenant"], only_b.json()["totals"]["requests"]) == (tenant_b, 2)
    assert only_b.json()["totals"]["classes"] == dict(classes_of(answers_b))

    assert everyone.status_code == 200, everyone.text
    assert (everyone.json()["tenant"], everyone.json()["totals"]["requests"]) == (None, 7)
    assert everyone.json()["totals"]["statuses"] == {"succeeded": 6, "expired": 1}
    assert (just_b.json()["tenant"], just_b.json()["totals"]["requests"]) == (tenant_b, 2)
    assert (pinned.json()["version"], pinned.json()["totals"]["requests"]) == (version.version, 7)


async def test_bad_requests_for_stats(settings: Settings, registry: Registry) -> None:
    version = await register(registry, affine_model())
    path = f"/v1/models/{version.model}"
    async with running(tuned(settings)) as api:
        answers = {
            "hours 0": await api.client.get(f"{path}/stats", params={"hours": 0}),
            "hours 745": await api.client.get(f"{path}/stats", params={"hours": 745}),
            "hours text": await api.client.get(f"{path}/stats", params={"hours": "day"}),
            "unknown model": await api.client.get(f"/v1/models/nope-{secrets.token_hex(4)}/stats"),
            "unknown version": await api.client.get(f"{path}@{version.version + 5}/stats"),
            "alias": await api.client.get(f"{path}@default/stats"),
            "bad name": await api.client.get("/v1/models/NOT%20A%20NAME/stats"),
        }
        async with api.as_key("") as anonymous:
            anonymous.headers.pop("Authorization", None)
            answers["no key"] = await anonymous.get(f"{path}/stats")
        fine = await api.client.get(f"{path}/stats", params={"hours": 744})
    got = {case: (r.status_code, r.json().get("code")) for case, r in answers.items()}
    assert got == {
        "hours 0": (400, "malformed_request"),
        "hours 745": (400, "malformed_request"),
        "hours text": (400, "malformed_request"),
        "unknown model": (404, "model_not_found"),
        "unknown version": (404, "version_not_found"),
        "alias": (422, "invalid_input"),
        "bad name": (404, "model_not_found"),
        "no key": (401, "unauthenticated"),
    }
    assert fine.status_code == 200, fine.text
    assert fine.json()["totals"]["requests"] == 0


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A Postgres of the test's own, to stop and start (the run's shared server is never stopped)."""
    server = EmbeddedPostgres(tmp_path / "postgres", persist=True).start()
    try:
        await upgrade(server.url)
        yield server
    finally:
        server.stop()


async def test_the_worker_serves_on_while_postgres_is_down_and_every_result_is_logged_or_counted(
    settings: Settings, own_postgres: EmbeddedPostgres, redis_client: aioredis.Redis
) -> None:
    url = own_postgres.url
    engine = create_engine(url, connect_timeout_s=1.0, pool_timeout_s=1.0)
    sessions = create_sessionmaker(engine)
    try:
        version = await register(Registry(sessions), affine_model())
        configured = logged(msgspec.structs.replace(settings, services=msgspec.structs.replace(
            settings.services, database_url=url)))  # fmt: skip
        part, x = partition(configured, version), np.ones((1, 4), dtype=np.float32)

        async def run(n: int) -> None:
            requests = [make_request(version, {"x": x}) for _ in range(n)]
            await enqueue(redis_client, part, requests)
            results = await wait_results(redis_client, configured, [r.id for r in requests])
            assert [r.status for r in results.values()] == ["succeeded"] * n

        with capture_logs() as logs:
            async with running_pool(worker_settings(configured), sessions, serve(version)):
                await run(3)

                async def written() -> bool:
                    return len(await log_rows(sessions, version.model)) == 3

                await wait_for(written, what="the first results logged")
                own_postgres.stop()
                await run(5)  # served while the log cannot be written

                async def failed() -> bool:
                    return any(e["event"] == "prediction_log.dropped" for e in logs)

                await wait_for(failed, what="a failed write")
                own_postgres.start()
                await run(2)
            # the pool has stopped and its log written what it still held
        dropped = [e for e in logs if e["event"] == "prediction_log.dropped"]
        assert {e["reason"] for e in dropped} == {"write failed"}
        kept = len(await log_rows(sessions, version.model))
        assert kept + sum(e["rows"] for e in dropped) == 10  # each result written once or counted as dropped
        assert kept >= 3 + 2  # before the outage, and after it
    finally:
        await engine.dispose()
