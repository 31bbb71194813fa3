"""Sync predict over the queue: 200 in time, 202 + Location otherwise, polling, deadlines, draining."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from apikit import FEATURES, Responder, register_model, running, tuned

from inferq.api import begin_drain
from inferq.contracts.errors import ErrorInfo
from inferq.contracts.messages import InferRequest, InferResult
from inferq.contracts.names import Names
from inferq.errors import NotFound
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.consumer import Entry, ensure_groups, read
from inferq.streams.partition import Partition

pytestmark = pytest.mark.integration

ROW = [1.0, 2.0, 3.0, 4.5]  # sums to 10.5 → label 1 (versicolor) with the fake classifier


@pytest.fixture
async def model(registry: Registry, model_name: str) -> str:
    await register_model(registry, model_name)
    return model_name


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/models/{m}/predict", 1),
        ("/v1/models/{m}@2/predict", 2),
        ("/v1/models/{m}@prod/predict", 2),
        ("/v1/models/{m}@default/predict", 1),
        ("/v1/models/{m}/versions/2/predict", 2),
        ("/v1/models/{m}/versions/1/predict", 1),
    ],
)
async def test_result_in_time_is_a_200_with_outputs_version_and_timings(
    settings: Settings, redis_client: aioredis.Redis, model: str, path: str, version: int
) -> None:
    async with running(tuned(settings)) as api, Responder(redis_client, api.settings, model, version) as worker:
        response = await api.client.post(path.format(m=model), json={"inputs": [ROW]}, headers={"Prefer": "wait=10"})
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=5"  # capped at wait_max_s
    body = response.json()
    assert body["model"] == model
    assert body["version"] == version
    assert body["status"] == "succeeded"
    assert len(body["id"]) == 32
    assert body["predictions"] == [
        {"label": 1, "class_name": "versicolor", "probabilities": {"setosa": 0.0, "versicolor": 1.0, "virginica": 0.0}}
    ]
    timings = body["timings"]
    assert timings["inference_ms"] == 0.25
    assert timings["batch_rows"] == 1
    assert 0 <= timings["queue_ms"] <= timings["total_ms"]
    # Answered by the reply channel, not by the result-key check after the whole wait.
    assert timings["total_ms"] < 4000
    assert [r.id for r in worker.seen] == [body["id"]]
    assert "Location" not in response.headers


@pytest.mark.parametrize(
    "inputs",
    [
        [dict(zip(FEATURES, ROW, strict=True)), dict(zip(FEATURES, [0.0, 0.0, 0.0, 2.0], strict=True))],  # records
        [ROW, [0.0, 0.0, 0.0, 2.0]],  # rows
        {"X": [ROW, [0.0, 0.0, 0.0, 2.0]]},  # named tensors, nested lists
        {"X": {"shape": [2, 4], "data": [*ROW, 0.0, 0.0, 0.0, 2.0]}},  # named tensors, shape + flat data
    ],
    ids=["records", "rows", "named-nested", "named-flat"],
)
async def test_the_three_input_forms_reach_the_worker_as_the_same_tensor(
    settings: Settings, redis_client: aioredis.Redis, model: str, inputs: object
) -> None:
    async with running(tuned(settings)) as api, Responder(redis_client, api.settings, model, 1) as worker:
        response = await api.client.post(f"/v1/models/{model}/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == [1, 2]
    (request,) = worker.seen
    assert request.rows == 2
    (tensor,) = request.inputs
    assert (tensor.name, tensor.dtype, tensor.shape) == ("X", "float32", (2, 4))


async def test_wait_runs_out_then_202_location_poll_queued_then_succeeded_with_long_ttl(
    settings: Settings, redis_client: aioredis.Redis, model: str
) -> None:
    async with running(tuned(settings)) as api:
        response = await api.client.post(
            f"/v1/models/{model}/predict", json={"inputs": [ROW]}, headers={"Prefer": "wait=0.2"}
        )
        assert response.status_code == 202, response.text
        assert response.headers["Preference-Applied"] == "wait=0.2"
        body = response.json()
        assert response.headers["Location"] == f"/v1/predictions/{body['id']}"
        assert body == {"id": body["id"], "status": "queued", "model": model, "version": 1}
        assert await redis_client.xlen(api.work_stream(model, 1)) == 1

        polled = await api.client.get(response.headers["Location"])
        assert polled.status_code == 200
        assert polled.json()["status"] == "queued"

        async with Responder(redis_client, api.settings, model, 1) as worker:
            for _ in range(100):
                polled = await api.client.get(response.headers["Location"])
                if polled.json()["status"] == "succeeded":
                    break
                await asyncio.sleep(0.05)
        assert [r.id for r in worker.seen] == [body["id"]]
        done = polled.json()
        assert done["status"] == "succeeded"
        assert done["predictions"][0]["label"] == 1
        assert done["timings"]["inference_ms"] == 0.25
        # The placeholder made the worker keep the result for the long TTL, not the short one.
        ttl = await redis_client.ttl(api.result_key(body["id"]))
        assert api.settings.queue.result_ttl_s - 60 < ttl <= api.settings.queue.result_ttl_s
        assert await redis_client.xlen(api.work_stream(model, 1)) == 0


async def test_a_result_answered_in_time_keeps_only_the_short_ttl(
    settings: Settings, redis_client: aioredis.Redis, model: str
) -> None:
    async with running(tuned(settings)) as api, Responder(redis_client, api.settings, model, 1):
        response = await api.client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]})
        assert response.status_code == 200
        ttl = await redis_client.ttl(api.result_key(response.json()["id"]))
    assert 0 < ttl <= round(2 * api.settings.queue.wait_max_s)


async def test_running_is_reported_while_a_worker_holds_the_entry(
    settings: Settings, redis_client: aioredis.Redis, model: str
) -> None:
    async with running(tuned(settings)) as api:
        response = await api.client.post(
            f"/v1/models/{model}/predict", json={"inputs": [ROW]}, headers={"Prefer": "respond-async"}
        )
        assert response.status_code == 202
        assert response.headers["Preference-Applied"] == "respond-async"
        # A consumer has taken the entry but not acknowledged it: the request is running.
        part = Partition.of(Names(api.settings.services.key_prefix), model=model, version=1)
        await ensure_groups(redis_client, part)
        assert len(await read(redis_client, part, consumer="slow", count=10, block_ms=None)) == 1
        polled = await api.client.get(response.headers["Location"])
    assert polled.json()["status"] == "running"


async def test_a_passed_deadline_with_no_worker_polls_as_expired(
    settings: Settings, redis_client: aioredis.Redis, model: str
) -> None:
    async with running(tuned(settings)) as api:
        response = await api.client.post(
            f"/v1/models/{model}/predict",
            json={"inputs": [ROW]},
            headers={"Prefer": "wait=0.1", "Cancel-After": "300ms"},
        )
        assert response.status_code == 202
        assert (await api.client.get(response.headers["Location"])).json()["status"] == "queued"
        await asyncio.sleep(0.4)
        assert (await api.client.get(response.headers["Location"])).json()["status"] == "expired"


async def test_cancel_after_and_request_id_travel_in_the_message(
    settings: Settings, redis_client: aioredis.Redis, model: str
) -> None:
    async with running(tuned(settings)) as api, Responder(redis_client, api.settings, model, 1) as worker:
        response = await api.client.post(
            f"/v1/models/{model}/predict",
            json={"inputs": [ROW]},
            headers={"Cancel-After": "2.5", "X-Request-ID": "trace-abc.1"},
        )
        default = await api.client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "trace-abc.1"
    first, second = worker.seen
    assert (first.ttl_ms, first.correlation_id, first.tenant) == (2500, "trace-abc.1", "default")
    assert first.reply is not None
    assert first.reply.kind == "api"
    assert second.ttl_ms == round(api.settings.queue.deadline_default_s * 1000)
    assert second.correlation_id == default.headers["X-Request-ID"]
    assert len(second.correlation_id) == 32


async def test_prefer_wait_is_capped_at_the_maximum(settings: Settings, model: str) -> None:
    async with running(tuned(settings, queue__wait_max_s=0.2)) as api:
        response = await api.client.post(
            f"/v1/models/{model}/predict", json={"inputs": [ROW]}, headers={"Prefer": "wait=3600"}
        )
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "wait=0.2"


def _failing(request: InferRequest, entry: Entry) -> InferResult:
    error = ErrorInfo(code="inference_failed", message="the model crashed", details={"op": "MatMul"})
    return InferResult(
        id=request.id, tenant=request.tenant, model=request.model, version=request.version, status="failed", error=error
    )


def _expired(request: InferRequest, entry: Entry) -> InferResult:
    return InferResult(
        id=request.id, tenant=request.tenant, model=request.model, version=request.version, status="expired"
    )


@pytest.mark.parametrize(
    ("answer", "status", "code"), [(_failing, 500, "inference_failed"), (_expired, 504, "deadline_exceeded")]
)
async def test_unsuccessful_results_are_problems_with_the_worker_code(
    settings: Settings, redis_client: aioredis.Redis, model: str, answer: object, status: int, code: str
) -> None:
    async with running(tuned(settings)) as api, Responder(redis_client, api.settings, model, 1, answer=answer):  # type: ignore[arg-type]
        response = await api.client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]})
        problem = response.json()
        polled = await api.client.get(f"/v1/predictions/{problem['details']['id']}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == code
    assert polled.status_code == 200
    assert polled.json()["status"] == ("failed" if code == "inference_failed" else "expired")


async def test_unknown_or_foreign_prediction_ids_are_404(
    settings: Settings, redis_client: aioredis.Redis, model: str
) -> None:
    async with running(tuned(settings)) as api:
        accepted = await api.client.post(
            f"/v1/models/{model}/predict", json={"inputs": [ROW]}, headers={"Prefer": "wait=0"}
        )
        request_id = accepted.json()["id"]
        own = await api.service.get_prediction(request_id, tenant="default")
        assert own.status == "queued"
        with pytest.raises(NotFound):
            await api.service.get_prediction(request_id, tenant="someone-else")
        unknown = await api.client.get("/v1/predictions/" + "0" * 32)
        garbage = await api.client.get("/v1/predictions/..%2Fetc")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"
    assert garbage.status_code == 404


async def test_draining_answers_every_held_caller_with_202_at_once(
    settings: Settings, redis_client: aioredis.Redis, model: str
) -> None:
    async with running(tuned(settings, queue__wait_max_s=60.0)) as api:
        held = [
            asyncio.create_task(
                api.client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]}, headers={"Prefer": "wait=60"})
            )
            for _ in range(3)
        ]
        for _ in range(100):
            if api.service.held == 3:
                break
            await asyncio.sleep(0.02)
        assert api.service.held == 3
        begin_drain(api.app)
        answers = await asyncio.wait_for(asyncio.gather(*held), timeout=5)
        refused = await api.client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]})
        ttls = [await redis_client.ttl(api.result_key(a.json()["id"])) for a in answers]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert all(ttl > api.settings.queue.result_ttl_s - 60 for ttl in ttls)
    assert refused.status_code == 503
    assert refused.json()["code"] == "service_unavailable"
    assert refused.headers["Retry-After"] == "1"
