"""The result cache: repeated inputs to a deterministic version answered from Redis, never by a worker.

Real workers (their run ledger counts every ONNX Runtime run) behind the in-process API: a hit is a run
that never happened. Also: keys per version and per input values (whatever their form), TTL, off by
default, refused for random models, Redis failing at lookup, quotas, tenancy, the ingress forwarder and
the worker refusing keys they did not earn, failures never cached, and V2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
from apikit import Api, closed_port, running, tuned
from onnx import TensorProto, helper
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from worker_harness import (
    build,
    enqueue,
    gather_model,
    ledger_lines,
    make_request,
    partition,
    register,
    running_pool,
    select,
    wait_for,
    wait_results,
    worker_settings,
)

from inferq.api.result_cache import LOOKUP
from inferq.api.service import PredictCall
from inferq.cli.demo import build as build_demo
from inferq.contracts.auth import Limits, Principal
from inferq.contracts.cached import cached_decoder
from inferq.contracts.digests import input_digest
from inferq.contracts.messages import request_decoder
from inferq.contracts.models import ModelRef, ModelVersion
from inferq.contracts.names import Names
from inferq.engine import read_signature
from inferq.errors import InvalidInput, ModelNotFound
from inferq.inputs import encode_tensors
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.connection import connect
from inferq.workers.ingress import Forwarder, Forwarding

pytestmark = pytest.mark.integration

Sessions = async_sessionmaker[AsyncSession]
CACHED = {"result_cache_ttl_s": 60}
FEATURES = ("sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm")
ROW = [5.1, 3.5, 1.4, 0.2]
OTHER_ROW = [6.7, 3.0, 5.2, 2.3]
WAIT = {"Prefer": "wait=5"}


@contextlib.asynccontextmanager
async def workers(
    settings: Settings, sessionmaker: Sessions, ledger: Path, *versions: ModelVersion
) -> AsyncIterator[None]:
    """A worker pool for ``versions`` (every run written to ``ledger``), once each one is consumed."""
    async with running_pool(worker_settings(settings, ledger), sessionmaker, select(*versions)):
        names = Names(settings.services.key_prefix)
        alive = [names.alive(names.partition(v.model, v.version)) for v in versions]
        redis = aioredis.Redis.from_url(settings.services.redis_url or "")
        try:
            await wait_for(lambda: _all_exist(redis, alive), timeout_s=60, what="the partitions to be consumed")
        finally:
            await redis.aclose()
        yield


async def _all_exist(redis: aioredis.Redis, keys: list[str]) -> bool:
    return int(await redis.exists(*keys)) == len(keys)


async def iris(registry: Registry, *, overrides: dict[str, int | float] | None = CACHED) -> ModelVersion:
    return await register(registry, build_demo("iris", 1).onnx, overrides=overrides, name=f"rc-{secrets.token_hex(4)}")


async def cache_keys(redis: aioredis.Redis, settings: Settings, model: str) -> list[str]:
    pattern = Names(settings.services.key_prefix).result_cache(f"{model}@*", "*", "*")
    return sorted([key.decode() async for key in redis.scan_iter(match=pattern)])


async def predict(api: Api, model: str, inputs: Any, **headers: str) -> Any:
    return await api.client.post(f"/v1/models/{model}/predict", json={"inputs": inputs}, headers={**WAIT, **headers})


def metric(text: str, model: str, version: int, outcome: str) -> float:
    line = f'inferq_result_cache_requests_total{{model="{model}",outcome="{outcome}",version="{version}"}} '
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


async def test_a_hit_is_answered_from_redis_and_needs_no_worker(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version, ledger = await iris(registry), tmp_path / "runs.jsonl"
    async with running(tuned(settings)) as api:
        async with workers(settings, sessionmaker, ledger, version):
            first = await predict(api, version.model, [ROW])
            second = await predict(api, version.model, [ROW])
            runs = len(ledger_lines(ledger))
        # The workers are gone: a hit still answers (hot route, then the Litestar handler), a miss cannot.
        third = await api.client.post(f"/v1/models/{version.model}/versions/1/predict", json={"inputs": [ROW]})
        asked_async = await predict(api, version.model, [ROW], Prefer="respond-async")
        unanswered = await predict(api, version.model, [OTHER_ROW], Prefer="wait=0.2")
        polled = await api.client.get(f"/v1/predictions/{second.json()['id']}")
        metrics = (await api.client.get("/metrics")).text
    assert first.status_code == 200, first.text
    assert "cached" not in first.json()
    assert "X-Cache" not in first.headers
    assert runs == 1  # the second request never reached ONNX Runtime
    assert "Preference-Applied" not in asked_async.headers  # answered at once: respond-async was not applied
    for response in (second, third, asked_async):
        assert response.status_code == 200, response.text
        assert response.headers["X-Cache"] == "hit"
        assert response.headers["X-Model-Version"] == "1"  # the served version's headers, as on a miss
        body = response.json()
        assert body["cached"] is True
        assert body["status"] == "succeeded"
        assert (body["model"], body["version"]) == (version.model, 1)
        assert body["predictions"] == first.json()["predictions"]
        assert body["predictions"][0]["class_name"] == "setosa"
        assert len(body["id"]) == 32
        assert (body["timings"]["inference_ms"], body["timings"]["batch_rows"]) == (0.0, 0)
    assert len({r.json()["id"] for r in (first, second, third, asked_async)}) == 4  # every request its own id
    assert unanswered.status_code == 202
    assert polled.status_code == 404  # nothing was queued under a hit's id: its 200 is the whole answer
    assert (metric(metrics, version.model, 1, "hit"), metric(metrics, version.model, 1, "miss")) == (3.0, 2.0)
    assert f'inferq_api_predictions_total{{model="{version.model}",outcome="succeeded",version="1"}} 4.0' in metrics


async def test_the_same_values_in_any_input_form_share_a_key_other_values_do_not(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version, ledger = await iris(registry), tmp_path / "runs.jsonl"
    forms = [
        [dict(zip(FEATURES, ROW, strict=True))],  # records
        [ROW],  # rows
        {"input": [ROW]},  # named tensors, nested
        {"input": {"shape": [1, 4], "data": ROW}},  # named tensors, flat
    ]
    async with running(tuned(settings)) as api, workers(settings, sessionmaker, ledger, version):
        answers = [await predict(api, version.model, inputs) for inputs in forms]
        other = await predict(api, version.model, [OTHER_ROW])
        two_rows = await predict(api, version.model, [ROW, ROW])
    assert [r.status_code for r in answers] == [200] * 4
    assert [r.headers.get("X-Cache") for r in answers] == [None, "hit", "hit", "hit"]
    assert len({str(r.json()["predictions"]) for r in answers}) == 1
    assert other.headers.get("X-Cache") is None
    assert other.json()["predictions"][0]["class_name"] == "virginica"
    assert two_rows.headers.get("X-Cache") is None  # two rows are other inputs than one
    assert len(ledger_lines(ledger)) == 3
    assert len(await cache_keys(redis_client, settings, version.model)) == 3


async def test_versions_never_share_entries(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    v1 = await iris(registry)
    v2 = await registry.register(
        name=v1.model, model=build_demo("iris", 1).onnx, signature=v1.signature, overrides=CACHED
    )
    ledger = tmp_path / "runs.jsonl"
    async with running(tuned(settings)) as api, workers(settings, sessionmaker, ledger, v1, v2):
        order = [1, 2, 2, 1]
        answers = [await predict(api, f"{v1.model}@{v}", [ROW]) for v in order]
    assert [(r.json()["version"], r.headers.get("X-Cache")) for r in answers] == [
        (1, None), (2, None), (2, "hit"), (1, "hit"),
    ]  # fmt: skip
    assert len(ledger_lines(ledger)) == 2
    keys = await cache_keys(redis_client, settings, v1.model)
    assert [key.split(":")[-3] for key in keys] == [f"{v1.model}@1", f"{v1.model}@2"]


async def test_an_entry_expires_after_its_ttl(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version, ledger = await iris(registry, overrides={"result_cache_ttl_s": 0.5}), tmp_path / "runs.jsonl"
    async with running(tuned(settings)) as api, workers(settings, sessionmaker, ledger, version):
        first = await predict(api, version.model, [ROW])
        [key] = await cache_keys(redis_client, settings, version.model)
        ttl_ms = await redis_client.pttl(key)
        await wait_for(lambda: _gone(redis_client, key), timeout_s=30, what="the entry to expire")
        after = await predict(api, version.model, [ROW])
        again = await predict(api, version.model, [ROW])
    assert first.status_code == after.status_code == again.status_code == 200
    assert 0 < ttl_ms <= 500
    assert [r.headers.get("X-Cache") for r in (first, after, again)] == [None, None, "hit"]
    assert len(ledger_lines(ledger)) == 2


async def _gone(redis: aioredis.Redis, key: str) -> bool:
    return int(await redis.exists(key)) == 0


async def test_the_cache_is_off_by_default(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    plain, zero = await iris(registry, overrides=None), await iris(registry, overrides={"result_cache_ttl_s": 0})
    ledger = tmp_path / "runs.jsonl"
    async with running(tuned(settings)) as api, workers(settings, sessionmaker, ledger, plain, zero):
        answers = [await predict(api, v.model, [ROW]) for v in (plain, plain, zero, zero)]
        metrics = (await api.client.get("/metrics")).text
    assert [r.status_code for r in answers] == [200] * 4
    assert [("cached" in r.json(), r.headers.get("X-Cache")) for r in answers] == [(False, None)] * 4
    assert len(ledger_lines(ledger)) == 4
    assert await cache_keys(redis_client, settings, plain.model) == []
    assert await cache_keys(redis_client, settings, zero.model) == []
    assert f'model="{plain.model}"' not in "".join(
        row for row in metrics.splitlines() if row.startswith("inferq_result_cache_requests_total")
    )


def random_model(*, dropout_training: bool = False) -> bytes:
    """``y = x + noise`` (RandomUniformLike), or ``y = Dropout(x, 0.5, training_mode=True)``."""
    if dropout_training:
        return build(
            [("x", TensorProto.FLOAT, [None, 4])],
            [("y", TensorProto.FLOAT, [None, 4])],
            [helper.make_node("Dropout", ["x", "ratio", "training"], ["y"])],
            [
                helper.make_tensor("ratio", TensorProto.FLOAT, [], [0.5]),
                helper.make_tensor("training", TensorProto.BOOL, [], [True]),
            ],
        )
    return build(
        [("x", TensorProto.FLOAT, [None, 4])],
        [("y", TensorProto.FLOAT, [None, 4])],
        [helper.make_node("RandomUniformLike", ["x"], ["noise"]), helper.make_node("Add", ["x", "noise"], ["y"])],
    )


@pytest.mark.parametrize(("dropout", "op"), [(False, "RandomUniformLike"), (True, "Dropout")])
async def test_a_model_with_random_operators_cannot_enable_the_cache(
    settings: Settings, registry: Registry, dropout: bool, op: str
) -> None:
    onnx = random_model(dropout_training=dropout)
    signature = read_signature(onnx)
    assert signature.nondeterministic_ops == (op,)
    name = f"rc-random-{secrets.token_hex(4)}"
    with pytest.raises(InvalidInput) as refused:
        await registry.register(name=name, model=onnx, signature=signature, overrides=CACHED)
    assert refused.value.code == "invalid_input"
    assert op in refused.value.message
    assert refused.value.details["nondeterministic_ops"] == [op]
    with pytest.raises(ModelNotFound):  # nothing half-registered
        await registry.get_model(name)
    served = await registry.register(name=name, model=onnx, signature=signature)  # without the cache: fine
    assert served.signature.nondeterministic_ops == (op,)
    with pytest.raises(InvalidInput, match="must be between 0 and 2592000, got -1"):
        await registry.register(name=name, model=onnx, signature=signature, overrides={"result_cache_ttl_s": -1})


async def test_over_http_the_cache_is_set_at_upload_or_by_patch_and_refused_for_random_models(
    settings: Settings, registry: Registry, sessionmaker: Sessions, tmp_path: Path
) -> None:
    name, noisy, ledger = f"rc-http-{secrets.token_hex(4)}", f"rc-noisy-{secrets.token_hex(4)}", tmp_path / "r.jsonl"

    async def upload(api: Api, model: str, onnx: bytes, overrides: dict[str, Any] | None = None) -> Any:
        data = {"overrides": json.dumps(overrides)} if overrides is not None else {}
        files = {"file": ("model.onnx", onnx, "application/octet-stream")}
        return await api.client.post(f"/v1/models/{model}/versions", files=files, data=data)

    async with running(tuned(settings)) as api:
        refused = await upload(api, noisy, random_model(), CACHED)
        missing = await api.client.get(f"/v1/models/{noisy}")
        plain = await upload(api, noisy, random_model())
        patched = await api.client.patch(f"/v1/models/{noisy}/versions/1", json={"overrides": CACHED})
        cached = await upload(api, name, build_demo("iris", 1).onnx, CACHED)
        uncached = await upload(api, name, build_demo("iris", 1).onnx)
        enabled = await api.client.patch(f"/v1/models/{name}/versions/2", json={"overrides": {"max_batch": 4} | CACHED})
        versions = [await registry.get_version(name, v) for v in (1, 2)]

        async def catalog_sees_the_patch() -> bool:
            route = await api.service.route(ModelRef(name=name, version=2))
            return route.version.overrides == enabled.json()["overrides"]

        await wait_for(catalog_sees_the_patch, what="the API's catalog to see the new overrides")
        async with workers(settings, sessionmaker, ledger, *versions):
            answers = [await predict(api, f"{name}@{v}", [ROW]) for v in (1, 1, 2, 2)]
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "invalid_input"
    assert "RandomUniformLike" in refused.json()["detail"]
    assert missing.status_code == 404  # nothing half-registered
    assert plain.status_code == 201, plain.text
    assert plain.json()["signature"]["nondeterministic_ops"] == ["RandomUniformLike"]
    assert patched.status_code == 422, patched.text
    assert "RandomUniformLike" in patched.json()["detail"]
    assert (cached.status_code, uncached.status_code, enabled.status_code) == (201, 201, 200)
    assert cached.json()["overrides"] == CACHED
    assert enabled.json()["overrides"] == {"max_batch": 4, "result_cache_ttl_s": 60}  # replaced whole
    assert [r.headers.get("X-Cache") for r in answers] == [None, "hit", None, "hit"]


async def test_a_failing_lookup_is_a_miss_and_the_queue_still_serves(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version, ledger = await iris(registry), tmp_path / "runs.jsonl"
    async with running(tuned(settings)) as api, workers(settings, sessionmaker, ledger, version):
        cache, broken = api.service._cache, aioredis.Redis(port=closed_port(), socket_connect_timeout=1)
        working, cache._lookup_script = cache._lookup_script, broken.register_script(LOOKUP)
        try:
            during = [await predict(api, version.model, [ROW]) for _ in range(2)]
        finally:
            await broken.aclose()
            cache._lookup_script = working
        after = await predict(api, version.model, [ROW])
        metrics = (await api.client.get("/metrics")).text
    assert [r.status_code for r in during] == [200, 200]
    assert [r.headers.get("X-Cache") for r in during] == [None, None]  # both ran on a worker
    assert after.headers["X-Cache"] == "hit"  # the workers kept caching meanwhile
    assert len(ledger_lines(ledger)) == 2
    assert (metric(metrics, version.model, 1, "hit"), metric(metrics, version.model, 1, "miss")) == (1.0, 2.0)


async def test_a_hit_spends_the_rate_quota_but_takes_no_in_flight_slot(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version, ledger = await iris(registry), tmp_path / "runs.jsonl"
    tenant = f"rc{secrets.token_hex(4)}"
    async with running(tuned(settings)) as api:
        key = await api.key_for(tenant, "predict", rate_per_s=0.001, burst=3, concurrency=1)
        key_id = key.split("_")[1]
        async with api.as_key(key) as client:
            async with workers(settings, sessionmaker, ledger, version):
                first = await client.post(f"/v1/models/{version.model}/predict", json={"inputs": [ROW]}, headers=WAIT)
            # No worker now: this one stays in flight, taking the key's only slot.
            held = await client.post(
                f"/v1/models/{version.model}/predict", json={"inputs": [OTHER_ROW]}, headers={"Prefer": "wait=0.1"}
            )
            hit = await client.post(f"/v1/models/{version.model}/predict", json={"inputs": [ROW]})
            spent = await client.post(f"/v1/models/{version.model}/predict", json={"inputs": [ROW]})
            in_flight = await redis_client.zcard(Names(settings.services.key_prefix).in_flight(key_id))
        metrics = (await api.client.get("/metrics")).text
    assert (first.status_code, held.status_code, hit.status_code) == (200, 202, 200)
    assert hit.headers["X-Cache"] == "hit"  # the key's one in-flight slot was taken: a hit needs none
    assert spent.status_code == 429, spent.text  # but the fourth request of a burst of 3 is refused, hit or not
    assert spent.json()["code"] == "rate_limited"
    assert spent.json()["details"]["scope"] == "rate"
    assert "Retry-After" in spent.headers
    assert in_flight == 1
    assert f'inferq_api_predictions_total{{model="{version.model}",outcome="rate_limited",version="1"}} 1.0' in metrics


async def test_a_hit_is_answered_under_the_callers_own_id_and_never_crosses_tenants(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version, ledger = await iris(registry), tmp_path / "runs.jsonl"
    limits = Limits(rate_per_s=100, burst=100, concurrency=10, max_rows=100, max_elements=10_000)

    def call(tenant: str, n: int) -> PredictCall:
        principal = Principal(key_id=secrets.token_hex(8), tenant=tenant, scopes=frozenset({"predict"}), limits=limits)
        return PredictCall(
            ref=ModelRef(name=version.model, version=1), inputs=[ROW], wait_s=5, ttl_ms=60_000,
            correlation_id=f"corr-{tenant}-{n}", principal=principal,
        )  # fmt: skip

    async with running(tuned(settings)) as api, workers(settings, sessionmaker, ledger, version):
        first = await api.service.predict(call("alpha", 1))
        second = await api.service.predict(call("alpha", 2))
        other = await api.service.predict(call("beta", 1))  # the same inputs from another tenant: its own entry
        keys = await cache_keys(redis_client, settings, version.model)
        stored = await redis_client.get(next(k for k in keys if ":alpha:" in k))
    assert (first.cached, second.cached, other.cached) == (False, True, False)
    assert len(keys) == 2  # a hit tells "someone sent these inputs lately": never across tenants
    assert first.result is not None
    assert second.result is not None
    assert (second.result.tenant, second.result.correlation_id) == ("alpha", "corr-alpha-2")
    assert second.request_id == second.result.id != first.request_id
    assert second.result.key_id == ""  # nothing to free: a hit takes no in-flight slot
    assert second.result.predictions == first.result.predictions
    # The entry holds the outputs only: no id or correlation id of the request that filled it.
    assert msgspec.msgpack.decode(stored).keys() == {"kind", "predictions"}
    assert cached_decoder.decode(stored).predictions == first.result.predictions
    for private in (first.request_id, "corr-alpha-1"):
        assert private.encode() not in stored
    assert len(ledger_lines(ledger)) == 2


async def test_the_ingress_forwarder_drops_the_fields_only_trusted_code_sets(
    settings: Settings, registry: Registry, redis_client: aioredis.Redis
) -> None:
    version = await iris(registry)
    producer, names = f"p{secrets.token_hex(3)}", Names(settings.services.key_prefix)
    digest = input_digest(encode_tensors({"input": np.array([ROW], dtype=np.float32)}))
    poisoned = {
        "kind": "ingress.v1", "model": version.model, "inputs": [OTHER_ROW],
        "cache_key": names.result_cache(version.key, "default", digest), "cache_ttl_ms": 3_600_000,
        "shadow_of": "x" * 32, "logged": True, "fallback_from": 7, "key_id": "0123456789abcdef",
        "job": {"job_id": "j", "seq": 0}, "reply": {"kind": "api", "name": "api-victim"},
    }  # fmt: skip
    raw = msgspec.msgpack.encode(poisoned)
    entry_id = (await redis_client.xadd(names.ingress_stream(producer), {"m": raw})).decode()
    redis = connect(settings.services)
    options = Forwarding(producers={producer: "default"}, admission_limit=100, deadline_default_ms=60_000,
                         max_elements=1000)  # fmt: skip
    forwarder = Forwarder(redis, names=names, resolve=registry.resolve, options=options)
    try:
        await forwarder.ensure_groups()
        assert await forwarder.settle(producer, entry_id, raw) == 1
    finally:
        await redis.aclose()
    [(_, fields)] = await redis_client.xrange(partition(settings, version).work)
    work = request_decoder.decode(fields[b"m"])
    assert (work.cache_key, work.cache_ttl_ms, work.shadow_of, work.logged, work.fallback_from) == ("", 0, "", False, 0)
    assert (work.key_id, work.job, work.tenant) == ("", None, "default")
    assert work.reply is not None
    assert (work.reply.kind, work.reply.name) == ("producer", producer)


async def test_a_worker_caches_only_under_the_key_its_own_inputs_make(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """A message naming another input's key (or any other key) ran, and answered, but cached nothing."""
    version, names = await iris(registry), Names(settings.services.key_prefix)
    row, other = np.array([ROW], dtype=np.float32), np.array([OTHER_ROW], dtype=np.float32)
    good_key = names.result_cache(
        version.key, "default", input_digest(encode_tensors({"input": row}), output="tensors")
    )
    stolen_key = names.result_cache(
        version.key, "default", input_digest(encode_tensors({"input": row}), output="predictions")
    )
    requests = [
        msgspec.structs.replace(make_request(version, {"input": other}, output="predictions"), cache_key=stolen_key,
                                cache_ttl_ms=60_000),  # other inputs under ROW's key: refused
        msgspec.structs.replace(make_request(version, {"input": row}), cache_key=names.quota("victim"),
                                cache_ttl_ms=60_000),  # not a cache key at all: refused
        msgspec.structs.replace(make_request(version, {"input": row}), cache_key=good_key, cache_ttl_ms=60_000),
    ]  # fmt: skip
    await enqueue(redis_client, partition(settings, version), requests)
    async with running_pool(worker_settings(settings), sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in requests])
    assert [results[r.id].status for r in requests] == ["succeeded"] * 3
    assert await cache_keys(redis_client, settings, version.model) == [good_key]
    assert await redis_client.exists(names.quota("victim")) == 0
    assert cached_decoder.decode(await redis_client.get(good_key)).tensors == results[requests[2].id].tensors


async def test_failures_are_never_cached(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version, ledger = await register(registry, gather_model(), overrides=CACHED), tmp_path / "runs.jsonl"
    async with running(tuned(settings)) as api, workers(settings, sessionmaker, ledger, version):
        failed = [await predict(api, version.model, {"i": [42]}) for _ in range(2)]  # out of the table: ORT raises
        keys_after_failures = await cache_keys(redis_client, settings, version.model)
        succeeded = [await predict(api, version.model, {"i": [3]}) for _ in range(2)]
    assert [r.status_code for r in failed] == [failed[0].status_code] * 2
    assert failed[0].status_code >= 400
    assert [r.json()["code"] for r in failed] == ["inference_failed"] * 2
    assert keys_after_failures == []
    assert [r.headers.get("X-Cache") for r in succeeded] == [None, "hit"]
    assert len(ledger_lines(ledger)) == 3  # both failures ran; the second success did not


async def test_v2_infer_uses_the_cache_apart_from_v1(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version, ledger = await iris(registry), tmp_path / "runs.jsonl"
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    path = f"/v2/models/{version.model}/infer"
    async with running(tuned(settings)) as api, workers(settings, sessionmaker, ledger, version):
        v1 = await predict(api, version.model, [ROW])
        answers = [await api.client.post(path, json=body, headers=WAIT) for _ in range(2)]
        labels_only = await api.client.post(path, json={**body, "outputs": [{"name": "label"}]}, headers=WAIT)
        async_hit = await api.client.post(path, json=body, headers={"Prefer": "respond-async"})
    assert v1.status_code == 200
    assert [r.status_code for r in answers] == [200, 200]
    assert [r.headers.get("X-Cache") for r in answers] == [None, "hit"]  # v1's predictions are not V2's tensors
    assert answers[0].json()["outputs"] == answers[1].json()["outputs"]
    assert labels_only.headers.get("X-Cache") is None  # other outputs asked for: another entry
    assert [o["name"] for o in labels_only.json()["outputs"]] == ["label"]
    assert async_hit.status_code == 200  # answered at once, so not "respond-async" applied
    assert async_hit.headers["X-Cache"] == "hit"
    assert "Preference-Applied" not in async_hit.headers
    assert len(ledger_lines(ledger)) == 3


async def test_concurrent_identical_misses_all_answer(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """No stampede protection: identical requests that all miss each run (and each writes the same entry)."""
    version, ledger = await iris(registry), tmp_path / "runs.jsonl"
    async with running(tuned(settings)) as api, workers(settings, sessionmaker, ledger, version):
        answers = await asyncio.gather(*(predict(api, version.model, [ROW]) for _ in range(5)))
        later = await predict(api, version.model, [ROW])
    assert [r.status_code for r in answers] == [200] * 5
    runs = len(ledger_lines(ledger))
    misses = sum(r.headers.get("X-Cache") is None for r in answers)
    assert runs == misses >= 1
    assert later.headers["X-Cache"] == "hit"
    # NOTE: equal up to float rounding only: ONNX Runtime's kernels for a batch of 4 rows and for 1 row round
    # differently in the last bits, so uncached answers to the same inputs already differ that much.
    first = answers[0].json()["predictions"][0]
    for response in [*answers, later]:
        prediction = response.json()["predictions"][0]
        assert prediction["label"] == first["label"]
        assert prediction["probabilities"] == pytest.approx(first["probabilities"], rel=1e-5, abs=1e-7)
