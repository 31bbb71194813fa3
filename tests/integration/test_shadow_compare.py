"""Shadow traffic and ``GET /v1/models/{model}/compare``: a real worker pool runs both versions of a pair (the
mirror never answers, is never stored nor published, never spends the caller's quota, and both sides are
logged whatever the sampling); the comparison's figures, from the pool's log and from rows written directly."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
from apikit import Api, running, tuned
from sklearn.datasets import load_wine
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from worker_harness import partition, running_pool, stream_state, wait_for, worker_settings
from worker_harness import select as serve

from inferq.cli.demo import build as build_demo
from inferq.contracts.models import ModelSignature, ModelVersion, Shadow
from inferq.contracts.names import Names
from inferq.engine import read_signature
from inferq.settings import Settings
from inferq.store.prediction_log import LogRecord, PredictionLogStore
from inferq.store.registry import Registry
from inferq.store.tables import PredictionLogRow
from inferq.streams.results import decode_stored

pytestmark = pytest.mark.integration

Sessions = async_sessionmaker[AsyncSession]
WAIT = {"Prefer": "wait=20"}


def logged(settings: Settings, *, sample: float) -> Settings:
    """``settings`` whose workers log a ``sample`` share of results and write them every 50 ms."""
    section = msgspec.structs.replace(
        settings.prediction_log, prediction_log_flush_s=0.05, prediction_log_sample=sample
    )
    return msgspec.structs.replace(settings, prediction_log=section)


async def wine_pair(registry: Registry) -> tuple[ModelVersion, ModelVersion]:
    """Versions 1 and 2 of a new model: two different wine classifiers that take the same inputs."""
    name = f"shadow-{secrets.token_hex(4)}"
    first, second = build_demo("wine", 1).onnx, build_demo("wine", 2).onnx
    v1 = await registry.register(name=name, model=first, signature=read_signature(first))
    v2 = await registry.register(name=name, model=second, signature=read_signature(second))
    return v1, v2


def wine_rows(n: int, *, seed: int) -> list[list[float]]:
    """``n`` blends of two wines each: inputs on which the two versions disagree now and then."""
    data = load_wine().data.astype(np.float32)
    rng = np.random.default_rng(seed)
    blends = (data[rng.integers(0, len(data), n)] + data[rng.integers(0, len(data), n)]) / 2
    return [[float(v) for v in row] for row in blends.astype(np.float32)]


async def log_rows(sessions: Sessions, model: str) -> list[PredictionLogRow]:
    async with sessions() as session:
        query = select(PredictionLogRow).where(PredictionLogRow.model == model)
        return list((await session.execute(query)).scalars())


@contextlib.asynccontextmanager
async def published(redis: aioredis.Redis, names: Names) -> AsyncIterator[list[str]]:
    """The ids of every result announced on any API instance's reply channel meanwhile."""
    ids: list[str] = []
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(names.reply_channel("*"))

    async def listen() -> None:
        while True:
            message = await pubsub.get_message(timeout=0.2)
            if message is not None:
                stored = decode_stored(message["data"])
                ids.append(stored.id)

    task = asyncio.create_task(listen())
    try:
        yield ids
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pubsub.aclose()


async def drained(redis: aioredis.Redis, settings: Settings, *versions: ModelVersion) -> None:
    """Until every entry of the versions' partitions was settled (acked and deleted)."""

    async def empty() -> bool:
        states = [await stream_state(redis, partition(settings, v)) for v in versions]
        return all(state == (0, 0, 0) for state in states)

    await wait_for(empty, timeout_s=60, what="the partitions drained")


def shadow_count(api: Api, version: ModelVersion, outcome: str) -> float:
    labels = {"model": version.model, "version": str(version.version), "outcome": outcome}
    return api.app.state.metrics.registry.get_sample_value("inferq_shadow_requests_total", labels) or 0.0


async def test_a_share_is_mirrored_logged_in_pairs_and_never_answers_or_spends_the_quota(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis
) -> None:
    v1, v2 = await wine_pair(registry)
    await registry.set_alias(v1.model, "default", weights={1: 100}, shadow=Shadow(version=2, share=25))
    # NOTE: a sample that keeps (practically) nothing: what is in the log was kept for being a pair
    configured = logged(tuned(settings), sample=1e-9)
    names = Names(settings.services.key_prefix)
    rows, total = wine_rows(400, seed=11), 400
    async with running(configured) as api:
        await api.app.state.services.catalog.refresh()
        key = await api.key_for(f"t-{secrets.token_hex(3)}", "predict", rate_per_s=0.001, burst=total,
                                concurrency=total)  # fmt: skip
        async with (
            running_pool(worker_settings(configured), sessionmaker, serve(v1, v2)),
            published(redis_client, names) as announced,
            api.as_key(key) as caller,
        ):
            answers: list[httpx.Response] = []
            for start in range(0, total, 20):  # 20 at a time: the quota, not the API, is what is measured
                batch = rows[start : start + 20]
                answers += await asyncio.gather(
                    *(caller.post(f"/v1/models/{v1.model}/predict", json={"inputs": [row]}, headers=WAIT)
                      for row in batch)
                )  # fmt: skip
            spent = await caller.post(f"/v1/models/{v1.model}/predict", json={"inputs": [rows[0]]})
            await api.service.shadows.wait()
            await drained(redis_client, configured, v1, v2)
        # the pool has stopped: closing it wrote every logged row
        sent, dropped = shadow_count(api, v2, "sent"), shadow_count(api, v2, "dropped")
        in_flight = await redis_client.zcard(names.in_flight(key.split("_")[1]))  # iq_<key id>_<secret>
        admin = await api.key_for(f"ops-{secrets.token_hex(3)}", "admin")
        async with api.as_key(admin) as operator:
            compared = await operator.get(f"/v1/models/{v1.model}/compare", params={"versions": "1,2"})

    assert [a.status_code for a in answers] == [200] * total, answers[0].text
    assert {a.json()["version"] for a in answers} == {1}  # never the shadow's answer
    assert (spent.status_code, spent.json()["code"]) == (429, "rate_limited")  # exactly `total`: no mirror spent it
    assert in_flight == 0

    log = await log_rows(sessionmaker, v1.model)
    primaries = {r.request_id: r for r in log if r.version == 1}
    shadows = [r for r in log if r.version == 2]
    mirrored = len(shadows)
    assert 60 <= mirrored <= 140, mirrored  # 25 % of 400 = 100, binomial sd ≈ 8.7
    assert (sent, dropped) == (mirrored, 0)
    assert all(r.shadow_of is not None for r in shadows)
    assert all(r.shadow_of is None and r.input_digest is not None for r in primaries.values())
    assert sorted(r.shadow_of for r in shadows) == sorted(primaries)  # one mirror per logged primary, paired
    assert all(r.input_digest == primaries[r.shadow_of].input_digest for r in shadows)
    by_id = {a.json()["id"]: a for a in answers}
    assert set(primaries) <= set(by_id)

    shadow_ids = [r.request_id for r in shadows]
    assert await redis_client.exists(*(names.result(i) for i in shadow_ids)) == 0  # never stored
    assert set(shadow_ids).isdisjoint(announced)  # never published
    assert set(primaries) <= set(announced)  # (while the primaries were)

    assert compared.status_code == 200, compared.text
    body = compared.json()
    first, second = body["versions"]
    assert (first["version"], first["requests"], first["shadow_requests"]) == (1, mirrored, 0)
    assert (second["version"], second["requests"], second["shadow_requests"]) == (2, mirrored, mirrored)
    assert sum(second["classes"].values()) == mirrored
    agreeing = sum(
        by_id[r.shadow_of].json()["predictions"][0]["class_name"] == r.predicted for r in shadows
    )  # the primary's answer (what the caller got) against its mirror's (what the log kept)
    [pair] = body["pairs"]
    assert pair["versions"] == [1, 2]
    assert pair["shadow"] == {"pairs": mirrored, "compared": mirrored, "agreed": agreeing,
                              "rate": round(agreeing / mirrored, 6)}  # fmt: skip
    assert pair["canary"] == {"pairs": 0, "compared": 0, "agreed": 0, "rate": None}


async def test_canary_pairs_are_the_inputs_both_versions_were_sent(
    settings: Settings, registry: Registry, sessionmaker: Sessions
) -> None:
    v1, v2 = await wine_pair(registry)  # no shadow: each input is sent to both versions by the caller
    configured = logged(tuned(settings), sample=1.0)
    rows = wine_rows(40, seed=6)
    async with running(configured) as api:
        async with running_pool(worker_settings(configured), sessionmaker, serve(v1, v2)):
            answers = {
                v: [await api.client.post(f"/v1/models/{v1.model}@{v}/predict", json={"inputs": [row]}, headers=WAIT)
                    for row in rows]
                for v in (1, 2)
            }  # fmt: skip
            # the first five inputs again, to version 1 only: one answer per input and version still
            again = [await api.client.post(f"/v1/models/{v1.model}@1/predict", json={"inputs": [row]}, headers=WAIT)
                     for row in rows[:5]]  # fmt: skip
        compared = await api.client.get(f"/v1/models/{v1.model}/compare", params={"versions": "2,1", "since": "1h"})

    assert [a.status_code for v in (1, 2) for a in answers[v]] + [a.status_code for a in again] == [200] * 85
    classes = {v: [a.json()["predictions"][0]["class_name"] for a in answers[v]] for v in (1, 2)}
    agreeing = sum(a == b for a, b in zip(classes[1], classes[2], strict=True))
    assert 0 < agreeing < 40  # these blends make the two versions disagree now and then
    assert compared.status_code == 200, compared.text
    body = compared.json()
    assert [v["version"] for v in body["versions"]] == [1, 2]
    assert [(v["requests"], v["shadow_requests"], v["errors"]) for v in body["versions"]] == [(45, 0, 0), (40, 0, 0)]
    assert body["versions"][1]["classes"] == dict(Counter(classes[2]))
    [pair] = body["pairs"]
    assert pair["canary"] == {"pairs": 40, "compared": 40, "agreed": agreeing, "rate": round(agreeing / 40, 6)}
    assert pair["shadow"] == {"pairs": 0, "compared": 0, "agreed": 0, "rate": None}


# The comparison's arithmetic, on rows written directly


def record(version: int, status: str = "succeeded", *, minutes_ago: float = 10, **fields: Any) -> LogRecord:
    return LogRecord(at=time.time() - minutes_ago * 60, tenant=fields.pop("tenant", "t1"), model=fields.pop("model"),
                     version=version, status=status, **fields)  # fmt: skip


def exact(values: Sequence[float]) -> dict[str, float]:
    """What ``percentile_cont`` gives: linear interpolation between the nearest values."""
    p50, p95, p99 = (round(float(v), 3) for v in np.percentile(np.array(values, dtype=np.float64), [50, 95, 99]))
    return {"p50": p50, "p95": p95, "p99": p99}


async def test_the_comparison_counts_percentiles_classes_and_agreement_exactly(
    settings: Settings, registry: Registry, sessionmaker: Sessions, signature: ModelSignature
) -> None:
    model = f"cmp-{secrets.token_hex(4)}"
    for n in range(4):
        await registry.register(name=model, model=f"v{n}".encode(), signature=signature)
    m: dict[str, Any] = {"model": model}
    d = {k: f"digest-{k}" for k in range(1, 10)}
    primaries = [  # version 1: what callers were answered
        record(1, request_id="p1", input_digest=d[1], queue_ms=1.0, inference_ms=2.0, predicted="a", **m),
        record(1, request_id="p2", input_digest=d[2], queue_ms=3.0, inference_ms=4.0, predicted="b", **m),
        record(1, "failed", request_id="p3", input_digest=d[3], error_code="inference_failed", **m),
        record(1, request_id="p4", input_digest=d[4], queue_ms=5.0, inference_ms=6.0, rows=3,
               predicted_counts={"a": 2, "b": 1}, **m),
        record(1, request_id="p5", input_digest=d[5], queue_ms=0.5, inference_ms=0.5, predicted="c", tenant="t2", **m),
    ]  # fmt: skip
    mirrors = [  # version 2, mirrored: agrees on p1 and p4 (same counts, other order) and p5; not on p2
        record(2, request_id="s1", shadow_of="p1", input_digest=d[1], queue_ms=1, inference_ms=1, predicted="a", **m),
        record(2, request_id="s2", shadow_of="p2", input_digest=d[2], queue_ms=1, inference_ms=2, predicted="a", **m),
        record(2, request_id="s3", shadow_of="p3", input_digest=d[3], queue_ms=1, inference_ms=3, predicted="b", **m),
        record(2, request_id="s4", shadow_of="p4", input_digest=d[4], queue_ms=1, inference_ms=4, rows=3,
               predicted_counts={"b": 1, "a": 2}, **m),
        record(2, request_id="s5", shadow_of="p5", input_digest=d[5], queue_ms=1, inference_ms=5, predicted="c", **m),
    ]  # fmt: skip
    canaries = [  # version 2, sent directly: agrees on d1 and d2 (its most frequent answer), not on d5
        record(2, request_id="c1", input_digest=d[1], queue_ms=2, inference_ms=1, predicted="a", **m),
        *(record(2, request_id=f"c2{k}", input_digest=d[2], queue_ms=2, inference_ms=2, predicted=label, **m)
          for k, label in enumerate("bab")),
        record(2, "expired", request_id="c3", input_digest=d[3], **m),  # both failed on d3: paired, not compared
        record(2, request_id="c5", input_digest=d[5], queue_ms=2, inference_ms=3, predicted="a", **m),
        record(2, request_id="c9", input_digest=d[9], queue_ms=2, inference_ms=4, predicted="a", **m),  # v2 only
    ]  # fmt: skip
    elsewhere = [
        record(1, request_id="old", input_digest=d[1], queue_ms=9, inference_ms=9, predicted="z", minutes_ago=120, **m),
        record(4, request_id="s6", shadow_of="p1", input_digest=d[1], predicted="z", **m),  # a version not asked for
        record(1, request_id="x1", input_digest=d[1], predicted="z", model=f"{model}-other"),
    ]  # fmt: skip
    await PredictionLogStore(sessionmaker).insert([*primaries, *mirrors, *canaries, *elsewhere])

    async with running(tuned(settings)) as api:
        admin = await api.key_for(f"ops-{secrets.token_hex(3)}", "admin")
        async with api.as_key(admin) as operator:
            hour = await operator.get(f"/v1/models/{model}/compare", params={"versions": "3,2,1", "since": "1h"})
            day = await operator.get(f"/v1/models/{model}/compare", params={"versions": "1,2"})

    assert hour.status_code == 200, hour.text
    body = hour.json()
    assert body["model"] == model
    one, two, three = body["versions"]
    assert one == {
        "version": 1, "requests": 5, "shadow_requests": 0, "rows": 7, "errors": 1, "error_rate": 0.2,
        "statuses": {"succeeded": 4, "failed": 1},
        "latency": {"queue_ms": exact([1, 3, 5, 0.5]), "inference_ms": exact([2, 4, 6, 0.5]),
                    "total_ms": exact([3, 7, 11, 1])},
        "classes": {"a": 3, "b": 2, "c": 1},
    }  # fmt: skip
    assert two == {
        "version": 2, "requests": 12, "shadow_requests": 5, "rows": 14, "errors": 1, "error_rate": 1 / 12,
        "statuses": {"succeeded": 11, "expired": 1},
        "latency": {"queue_ms": exact([1] * 5 + [2] * 6), "inference_ms": exact([1, 2, 3, 4, 5, 1, 2, 2, 2, 3, 4]),
                    "total_ms": exact([2, 3, 4, 5, 6, 3, 4, 4, 4, 5, 6])},
        "classes": {"a": 8, "b": 4, "c": 1},
    }  # fmt: skip
    assert three == {"version": 3, "requests": 0, "shadow_requests": 0, "rows": 0, "errors": 0, "error_rate": 0.0,
                     "statuses": {}, "latency": {}, "classes": {}}  # fmt: skip
    nothing = {"pairs": 0, "compared": 0, "agreed": 0, "rate": None}
    assert body["pairs"] == [
        {"versions": [1, 2], "shadow": {"pairs": 5, "compared": 4, "agreed": 3, "rate": 0.75},
         "canary": {"pairs": 4, "compared": 3, "agreed": 2, "rate": 0.666667}},
        {"versions": [1, 3], "shadow": nothing, "canary": nothing},
        {"versions": [2, 3], "shadow": nothing, "canary": nothing},
    ]  # fmt: skip

    assert day.status_code == 200, day.text
    assert day.json()["versions"][0]["requests"] == 6  # the row of two hours ago is in the last 24 h
    assert day.json()["pairs"][0]["canary"]["pairs"] == 4  # d1 again: one answer per version and input (the mode)


async def test_bad_requests_for_a_comparison(settings: Settings, registry: Registry, signature: ModelSignature) -> None:
    model = f"cmp-{secrets.token_hex(4)}"
    for n in range(2):
        await registry.register(name=model, model=f"w{n}".encode(), signature=signature)
    path = f"/v1/models/{model}/compare"
    async with running(tuned(settings)) as api:
        admin = await api.key_for(f"ops-{secrets.token_hex(3)}", "admin")
        predictor = await api.key_for(f"t-{secrets.token_hex(3)}", "predict", "jobs")
        async with api.as_key(admin) as operator, api.as_key(predictor) as caller:
            answers = {
                "not numbers": await operator.get(path, params={"versions": "one,two"}),
                "one version": await operator.get(path, params={"versions": "1"}),
                "twice the same": await operator.get(path, params={"versions": "1,1"}),
                "nine versions": await operator.get(path, params={"versions": ",".join(map(str, range(1, 10)))}),
                "version 0": await operator.get(path, params={"versions": "0,1"}),
                "since invalid": await operator.get(path, params={"versions": "1,2", "since": "soon"}),
                "since too long": await operator.get(path, params={"versions": "1,2", "since": "40d"}),
                "no versions": await operator.get(path),
                "unknown version": await operator.get(path, params={"versions": "1,99"}),
                "unknown model": await operator.get(f"/v1/models/{model}-nope/compare", params={"versions": "1,2"}),
                "not admin": await caller.get(path, params={"versions": "1,2"}),
            }
            fine = await operator.get(path, params={"versions": " 2 , 1 ", "since": "90"})
    got = {name: (r.status_code, r.json().get("code")) for name, r in answers.items()}
    assert got == {
        "not numbers": (422, "invalid_input"),
        "one version": (422, "invalid_input"),
        "twice the same": (422, "invalid_input"),
        "nine versions": (422, "invalid_input"),
        "version 0": (422, "invalid_input"),
        "since invalid": (422, "invalid_input"),
        "since too long": (422, "invalid_input"),
        "no versions": (400, "malformed_request"),
        "unknown version": (404, "version_not_found"),
        "unknown model": (404, "model_not_found"),
        "not admin": (403, "forbidden"),
    }
    assert "versions" in answers["one version"].json()["detail"]
    assert "99" in answers["unknown version"].json()["detail"]
    assert fine.status_code == 200, fine.text
    assert [v["version"] for v in fine.json()["versions"]] == [1, 2]
