"""``GET /health/backlog`` and the stream gauges on ``/metrics``: what KEDA and Prometheus read, checked
against entries put on the streams by the API itself and read by a stand-in consumer."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from apikit import closed_port, register_model, running, tuned

from inferq.contracts.names import Names
from inferq.embedded import EmbeddedRedis
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.consumer import ensure_groups
from inferq.streams.partition import Partition

pytestmark = pytest.mark.integration

ASYNC = {"Prefer": "respond-async"}
ROW = [5.1, 3.5, 1.4, 0.2]


def gauge(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from the exposition text (None when the series is absent)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == labels:
            return float(match.group(2))
    return None


def partition_of(report: dict[str, object], key: str) -> dict[str, object]:
    parts = report["partitions"]
    assert isinstance(parts, list)
    [found] = [p for p in parts if p["partition"] == key]
    return found  # type: ignore[no-any-return]


async def test_backlog_counts_waiting_and_pending_entries_and_live_workers(
    settings: Settings, registry: Registry, model_name: str, redis_client: aioredis.Redis
) -> None:
    await register_model(registry, model_name)
    part = Partition.of(Names(settings.services.key_prefix), model=model_name, version=1)
    async with running(tuned(settings)) as api:
        empty = (await api.client.get("/health/backlog")).json()
        for _ in range(3):
            accepted = await api.client.post(
                f"/v1/models/{model_name}@1/predict", json={"inputs": [ROW]}, headers=ASYNC
            )
            assert accepted.status_code == 202, accepted.text
        await asyncio.sleep(1.05)  # past the one-second cache
        waiting = (await api.client.get("/health/backlog")).json()

        # A worker takes one entry (pending) and reports itself alive; another stopped reporting long ago.
        await ensure_groups(redis_client, part)
        await redis_client.xreadgroup(part.group, "w1", {part.work: ">"}, count=1)
        now_s, now_us = await redis_client.time()
        now_ms = now_s * 1000 + now_us // 1000
        await redis_client.hset(f"{part.rate_key}:workers", mapping={"w1": f"5.0 {now_ms}", "gone": "5.0 1000"})
        await asyncio.sleep(1.05)
        taken = (await api.client.get("/health/backlog")).json()
        metrics = (await api.client.get("/metrics")).text

    assert partition_of(empty, f"{model_name}@1")["backlog"] == 0
    mine = partition_of(waiting, f"{model_name}@1")
    assert (mine["backlog"], mine["pending"], mine["consumers"], mine["dead_letters"]) == (3, 0, 0, 0)
    assert mine["oldest_age_s"] > 0
    assert waiting["total"] >= 3  # other tests' partitions may hold entries too
    lanes = {lane["lane"]: lane for lane in mine["lanes"]}
    assert (lanes["interactive"]["backlog"], lanes["bulk"]["backlog"]) == (3, 0)

    mine = partition_of(taken, f"{model_name}@1")
    assert (mine["backlog"], mine["pending"], mine["consumers"]) == (2, 1, 1)
    assert partition_of(taken, f"{model_name}@2")["backlog"] == 0
    assert gauge(metrics, "inferq_stream_backlog", lane="interactive", partition=f"{model_name}@1") == 2
    assert gauge(metrics, "inferq_stream_pending", lane="interactive", partition=f"{model_name}@1") == 1
    assert gauge(metrics, "inferq_stream_consumers", partition=f"{model_name}@1") == 1
    assert gauge(metrics, "inferq_stream_dead_letters", partition=f"{model_name}@1") == 0
    oldest = gauge(metrics, "inferq_stream_oldest_age_seconds", lane="interactive", partition=f"{model_name}@1")
    assert oldest is not None
    assert oldest > 1
    assert "inferq_api_requests_total" in metrics  # the process's own metrics render beside them


async def test_backlog_is_a_503_and_metrics_still_render_when_redis_is_down(
    settings: Settings, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name)
    down = tuned(settings, services__redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with running(down) as api:
        backlog = await asyncio.wait_for(api.client.get("/health/backlog"), timeout=10)
        metrics = await asyncio.wait_for(api.client.get("/metrics"), timeout=10)
    assert backlog.status_code == 503
    assert backlog.json()["code"] == "service_unavailable"
    assert metrics.status_code == 200
    assert "inferq_stream_backlog" not in metrics.text
    assert "inferq_api_requests_total" in metrics.text


async def test_a_refused_read_is_a_503_never_a_wrong_zero(
    settings: Settings, registry: Registry, model_name: str, tmp_path: Path
) -> None:
    await register_model(registry, model_name)
    with EmbeddedRedis(tmp_path / "redis") as own:
        admin = aioredis.Redis.from_url(own.url)
        # Everything but XRANGE (the oldest entry's age): an ACL that forgot one command.
        await admin.acl_setuser("partial", enabled=True, nopass=True, commands=["+@all", "-xrange"], keys=["*"],
                                channels=["*"])  # fmt: skip
        await admin.aclose()
        partial = tuned(settings, services__redis_url=f"redis://partial@127.0.0.1:{own.port}/0")
        async with running(partial) as api:
            await api.client.post(f"/v1/models/{model_name}@1/predict", json={"inputs": [ROW]}, headers=ASYNC)
            backlog = await api.client.get("/health/backlog")
    assert backlog.status_code == 503, backlog.text
    assert "NOPERM" in backlog.json()["detail"] or "permission" in backlog.json()["detail"]


async def test_archived_versions_are_left_out_and_concurrent_callers_share_one_reading(
    settings: Settings, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name)
    await registry.set_alias(model_name, "default", weights={2: 100})  # an alias's version cannot be archived
    await registry.set_status(model_name, 1, "archived")
    async with running(tuned(settings)) as api:
        await asyncio.sleep(0.6)  # the catalog sees the status
        calls = 0
        directory = api.app.state.services.models
        real = directory._redis.pipeline

        def counting(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return real(*args, **kwargs)

        directory._redis.pipeline = counting
        answers = await asyncio.gather(*(api.client.get("/health/backlog") for _ in range(10)))
    parts = {p["partition"] for p in answers[0].json()["partitions"]}
    assert f"{model_name}@2" in parts
    assert f"{model_name}@1" not in parts
    assert calls == 1
