"""Schemathesis against the served OpenAPI document with two tenants' keys; another tenant's objects are 404.

The fuzzing runs in a thread (Hypothesis drives it synchronously) and reaches the app on the test's event loop
through a ``requests`` adapter: the app, its Redis and Postgres clients and the stand-in workers share one
loop, and no socket is opened. Every operation is fuzzed with positive and negative cases, and with cases
aimed at tenant A's own objects (sent with A's or B's key); each response must be no 5xx, carry a documented
status and content type, and match its documented schema and headers.
"""

from __future__ import annotations

import asyncio
import io
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import hypothesis
import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
import requests
import requests.adapters
import schemathesis
import urllib3
from apikit import SIGNATURE, Api, Responder, bearer, classify, register_model, running, tuned
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inferq.contracts.messages import InferRequest, InferResult
from inferq.inputs.tensors import encode_tensors
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.consumer import Entry

pytestmark = pytest.mark.integration

EXAMPLES = 25  # per operation and kind of case: 89 runs, ~2,200 requests in all
BASE = "http://api"
# NOTE: not `negative_data_rejection`: it counts unknown query parameters as invalid (Litestar ignores them, as
# most servers do), and it cannot see that the key this test adds back was the header a negative case removed.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ROW = [5.1, 3.5, 1.4, 0.2]
TENSOR = {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}


@dataclass
class World:
    """The app, three tenants' keys, and what tenant A owns (its keys: predict+jobs; ``admin``: admin only)."""

    api: Api
    model: str
    tenant_a: str
    key_a: str
    key_b: str
    admin: str
    owned: dict[str, str]  # names of tenant A's objects, and a spare tenant and key for the admin routes


@pytest.fixture
async def world(settings: Settings, registry: Registry, model_name: str) -> AsyncIterator[World]:
    await register_model(registry, model_name, overrides={"max_batch": 16, "max_batch_delay_ms": 0.5})  # int and float
    async with running(msgspec.structs.replace(tuned(settings), webhook_allow_private=True)) as api:
        run = secrets.token_hex(4)
        key_a = await api.key_for(f"fuzz-a-{run}", "predict", "jobs")
        key_b = await api.key_for(f"fuzz-b-{run}", "predict", "jobs")
        admin = await api.key_for(f"fuzz-ops-{run}", "admin")
        spare = await api.key_for(f"fuzz-c-{run}", "predict")
        owned = await _owned_by(api, key_a, model_name)  # no worker yet: the predictions stay queued
        owned |= {"tenant": f"fuzz-c-{run}", "key_id": spare.split("_")[1]}
        yield World(
            api=api, model=model_name, tenant_a=f"fuzz-a-{run}", key_a=key_a, key_b=key_b, admin=admin, owned=owned
        )


async def _owned_by(api: Api, key: str, model: str) -> dict[str, str]:
    """A canceled job with a webhook delivery, a queued job, a /v1 and a /v2 prediction, made with ``key``."""
    async with api.as_key(key) as client:
        hooked = {"model": model, "inputs": [ROW], "webhook": {"url": "http://127.0.0.1:9/hook"}}
        job = (await _ok(client.post("/v1/jobs", json=hooked), 202))["id"]
        await _ok(client.post(f"/v1/jobs/{job}/cancel"), 200)
        (delivery,) = await _ok(client.get(f"/v1/jobs/{job}/webhooks"), 200)
        queued = (await _ok(client.post("/v1/jobs", json={"model": model, "inputs": [ROW]}), 202))["id"]
        later = {"Prefer": "respond-async"}
        v1 = await _ok(client.post(f"/v1/models/{model}/predict", json={"inputs": [ROW]}, headers=later), 202)
        v2 = await _ok(client.post(f"/v2/models/{model}/infer", json={"inputs": [TENSOR]}, headers=later), 202)
    return {
        "job_id": job,
        "delivery_id": delivery["id"],
        "queued_job_id": queued,
        "v1_prediction_id": v1["id"],
        "v2_prediction_id": v2["id"],
    }


async def _ok(call: Any, status: int) -> Any:
    response: httpx.Response = await call
    assert response.status_code == status, response.text
    return response.json()


def answer(request: InferRequest, entry: Entry) -> InferResult:
    """``classify``, with the label and probabilities as tensors when the request wants tensors (V2)."""
    result = classify(request, entry)
    if request.output != "tensors":
        return result
    names = SIGNATURE.class_names or ()
    tensors: dict[str, np.ndarray] = {
        "label": np.array([p.label for p in result.predictions], dtype=np.int64),
        "probabilities": np.array(
            [[(p.probabilities or {})[n] for n in names] for p in result.predictions], dtype=np.float32
        ),
    }
    return msgspec.structs.replace(result, predictions=(), tensors=encode_tensors(tensors))


# The fuzzing.


class AppAdapter(requests.adapters.HTTPAdapter):
    """Hands each ``requests`` call to the app on ``loop`` (the caller is another thread) and waits for it."""

    def __init__(self, client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._client = client
        self._loop = loop

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        future = asyncio.run_coroutine_threadsafe(self._exchange(request), self._loop)
        try:
            return future.result(timeout=60)
        finally:
            future.cancel()

    async def _exchange(self, request: requests.PreparedRequest) -> requests.Response:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        assert body is None or isinstance(body, bytes), type(body)  # requests has encoded every form and file
        headers = [
            (name, value if isinstance(value, str) else value.decode()) for name, value in request.headers.items()
        ]
        answer = await self._client.request(str(request.method), str(request.url), headers=headers, content=body)
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(answer.content),
            headers=urllib3.HTTPHeaderDict(answer.headers.multi_items()),
            status=answer.status_code,
            reason=answer.reason_phrase,
            version=11,
            preload_content=False,
            decode_content=False,
        )
        return self.build_response(request, raw)


async def test_every_operation_answers_as_documented(world: World, redis_client: aioredis.Redis) -> None:
    document = (await world.api.client.get("/schema/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config())
    schema.config.update(base_url=BASE)
    session = requests.Session()
    settings, model = world.api.settings, world.model
    async with (
        Responder(redis_client, settings, model, 1, answer=answer),
        Responder(redis_client, settings, model, 2, answer=answer),
        httpx.AsyncClient(transport=world.api.client._transport, base_url=BASE, timeout=30) as client,
    ):
        session.mount(BASE, AppAdapter(client, asyncio.get_running_loop()))
        failures, ran = await asyncio.to_thread(_fuzz_all, schema, world, session)
    assert not failures, "\n\n".join(failures)
    documented = {f"{method.upper()} {path}" for path, operations in document["paths"].items() for method in operations}
    assert set(ran) == documented  # nothing skipped: every operation got its positive cases at least
    # the 29 operations whose path names only what this test made also got cases aimed at those
    assert sum(kinds == {"positive", "negative", "owned"} for kinds in ran.values()) == 29, ran


def _fuzz_all(schema: Any, world: World, session: requests.Session) -> tuple[list[str], dict[str, set[str]]]:
    """Every operation, each kind of case: the reports of the ones that failed, and what ran."""
    failures: list[str] = []
    ran: dict[str, set[str]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        admin = "admin" in (operation.definition.raw.get("tags") or [])
        keys = [world.admin] if admin else [world.key_a, world.key_b]
        for kind, strategy in _strategies(operation, world):
            foreign = kind == "owned" and bool(_tenant_objects(operation.path) and not admin)
            failure = _fuzz(strategy, keys=keys, session=session, foreign_key=world.key_b if foreign else None)
            ran.setdefault(operation.label, set()).add(kind)
            if failure:
                failures.append(f"{operation.label} [{kind}]: {failure}")
    return failures, ran


def _strategies(operation: Any, world: World) -> list[tuple[str, st.SearchStrategy[Any]]]:
    """Positive and negative cases, and positive ones naming tenant A's objects, the model, a valid body."""
    raw = operation.definition.raw
    made = [("positive", operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE))]
    if raw.get("parameters") or raw.get("requestBody") or raw.get("security") != [{}]:  # else nothing to negate
        made.append(("negative", operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)))
    names = {p["name"] for p in raw.get("parameters", []) if p["in"] == "path"}
    pins = _pins(operation.path, world)
    if names and names <= set(pins):
        body = _body(operation.path)
        extra = {"body": body, "media_type": "application/json"} if body is not None else {}
        made.append(("owned", operation.as_strategy(path_parameters={n: pins[n] for n in names}, **extra)))
    return made


def _pins(path: str, world: World) -> dict[str, str]:
    owned = world.owned
    prediction = owned["v2_prediction_id"] if path.startswith("/v2/") else owned["v1_prediction_id"]
    return {
        "model": world.model,
        "version": "2",
        "job_id": owned["job_id"],  # canceled: its event stream ends
        "delivery_id": owned["delivery_id"],
        "prediction_id": prediction,
        "tenant": owned["tenant"],  # NOTE: not A's or B's: fuzzed limits would throttle the rest of the run
        "key_id": owned["key_id"],
    }


def _body(path: str) -> Any:
    """A valid body for the registered model, where the route takes one."""
    if path.endswith("/predict"):
        return {"inputs": [ROW]}
    if path.endswith("/infer"):
        return {"inputs": [TENSOR]}
    return None


def _tenant_objects(path: str) -> bool:
    """The path names an object one tenant owns (a job, a delivery, a prediction), not a shared model."""
    return any(name in path for name in ("{job_id}", "{delivery_id}", "{prediction_id}"))


def _fuzz(
    strategy: st.SearchStrategy[Any], *, keys: list[str], session: requests.Session, foreign_key: str | None
) -> str | None:
    """The first failing example's report (no shrinking), or None. ``foreign_key`` must never get a 2xx."""

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=strategy, key=st.sampled_from(keys))
    def run(case: Any, key: str) -> None:
        response = case.call_and_validate(session=session, headers=bearer(key), checks=CHECKS)
        if key == foreign_key:
            assert not 200 <= response.status_code < 300, f"tenant B read tenant A's object: {case.as_curl_command()}"

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup is a BaseExceptionGroup
        return str(exc)
    return None


def _catch_all_items(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(schema.property, property)`` for each array property whose items also match anything (``oneOf [X, {}]``:
    how Litestar 2.25 renders ``Annotated[tuple[X, ...], msgspec.Meta(...)]``, which no valid value satisfies)."""
    found = []
    for schema_name, schema in document["components"]["schemas"].items():
        for prop_name, prop in schema.get("properties", {}).items():
            branches = prop.get("items", {}).get("oneOf", [])
            if len(branches) == 2 and branches[1] == {}:
                found.append((f"{schema_name}.{prop_name}", prop))
    return found


async def test_no_array_items_match_anything(settings: Settings, migrated_db: str) -> None:
    async with running(tuned(settings)) as api:
        document = (await api.client.get("/schema/openapi.json")).json()
    assert [name for name, _ in _catch_all_items(document)] == []


# Tenants, keys and scopes, asked directly.

# Every route naming one tenant's object, as (method, path template over World.owned).
OBJECT_ROUTES = [
    ("GET", "/v1/jobs/{job_id}"),
    ("POST", "/v1/jobs/{queued_job_id}/cancel"),
    ("GET", "/v1/jobs/{job_id}/results"),
    ("GET", "/v1/jobs/{job_id}/results.jsonl"),
    ("GET", "/v1/jobs/{job_id}/errors.jsonl"),
    ("GET", "/v1/jobs/{job_id}/events"),
    ("GET", "/v1/jobs/{job_id}/webhooks"),
    ("POST", "/v1/jobs/{job_id}/webhooks/{delivery_id}/replay"),
    ("GET", "/v1/predictions/{v1_prediction_id}"),
    ("GET", "/v2/predictions/{v2_prediction_id}"),
]
OWNER_STATUS = [200, 200, 200, 200, 200, 200, 200, 202, 200, 202]  # tenant A's answers, route by route
PREDICT_ROUTES = {"/v1/predictions/{v1_prediction_id}", "/v2/predictions/{v2_prediction_id}"}


def _unknown(owned: dict[str, str]) -> dict[str, str]:
    """Ids shaped like ``owned``'s that name nothing."""
    return {name: re.sub(r"[0-9a-f]{32}$", secrets.token_hex(16), value) for name, value in owned.items()}


async def test_another_tenants_objects_are_not_found_and_read_like_unknown_ones(world: World) -> None:
    owned, unknown = world.owned, _unknown(world.owned)
    async with world.api.as_key(world.key_b) as b, world.api.as_key(world.key_a) as a:
        deliveries = (await a.get(f"/v1/jobs/{owned['job_id']}/webhooks")).json()
        for method, template in OBJECT_ROUTES:
            theirs = await b.request(method, template.format(**owned))
            nobodys = await b.request(method, template.format(**unknown))
            assert (theirs.status_code, nobodys.status_code) == (404, 404), (template, theirs.text)
            # the same body but for the ids: another tenant's object reads exactly like a missing one
            assert _without_ids(theirs.text, owned) == _without_ids(nobodys.text, unknown), template
        # B's cancel and replay changed nothing of A's
        assert (await a.get(f"/v1/jobs/{owned['queued_job_id']}")).json()["status"] == "queued"
        assert (await a.get(f"/v1/jobs/{owned['job_id']}/webhooks")).json() == deliveries
        assert (await b.get("/v1/jobs")).json()["data"] == []
        assert len((await a.get("/v1/jobs")).json()["data"]) == 2
        # and each of those routes does answer its owner
        answers = [(await a.request(m, t.format(**owned))).status_code for m, t in OBJECT_ROUTES]
    assert answers == OWNER_STATUS


def _without_ids(text: str, ids: dict[str, str]) -> str:
    for value in ids.values():
        text = text.replace(value, "<id>")
    return text


async def test_no_key_or_a_bad_key_is_401_on_every_route_naming_an_object(world: World) -> None:
    tampered = world.key_a[:-1] + ("1" if world.key_a.endswith("0") else "0")  # the key's id, a wrong secret
    for headers in ({}, {"Authorization": "Bearer nope"}, bearer(tampered), {"Authorization": f"Basic {world.key_a}"}):
        async with httpx.AsyncClient(transport=world.api.client._transport, base_url=BASE, headers=headers) as c:
            for method, template in OBJECT_ROUTES:
                response = await c.request(method, template.format(**world.owned))
                assert response.status_code == 401, (template, headers, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer"), template


async def test_a_key_without_the_routes_scope_is_403_even_on_its_own_tenants_objects(world: World) -> None:
    jobs_only = await world.api.key_for(world.tenant_a, "jobs")
    predict_only = await world.api.key_for(world.tenant_a, "predict")
    job_routes = [r for r in OBJECT_ROUTES if r[1] not in PREDICT_ROUTES]
    predict_routes = [r for r in OBJECT_ROUTES if r[1] in PREDICT_ROUTES]
    refused = 0
    # the scope is checked before any lookup: A's own objects, and for the admin-only key, anyone's
    for key, routes in ((jobs_only, predict_routes), (predict_only, job_routes), (world.admin, OBJECT_ROUTES)):
        async with world.api.as_key(key) as client:
            for method, template in routes:
                response = await client.request(method, template.format(**world.owned))
                assert response.status_code == 403, (template, response.text)
                refused += 1
    assert refused == len(OBJECT_ROUTES) * 2
    async with world.api.as_key(jobs_only) as client:  # the same key reads what its scope covers
        assert (await client.get(f"/v1/jobs/{world.owned['job_id']}")).status_code == 200


async def test_rotate_refuses_a_grace_outside_zero_to_ninety_days(world: World) -> None:
    """``grace_s`` is declared 0 to 90 days: outside that (or not finite) a 400, and no key is made.

    NOTE: Litestar 2.25 neither enforces nor documents ``msgspec.Meta`` on a query parameter; it does both for
    ``Annotated[float, QueryParameter(ge=..., le=...)]``.
    """
    key_id = world.owned["key_id"]
    async with world.api.as_key(world.admin) as client:
        before = (await client.get("/v1/admin/keys", params={"tenant": world.owned["tenant"]})).json()
        for grace in ("-1", "7776001", "1e20", "-1e16", "nan", "inf"):
            response = await client.post(f"/v1/admin/keys/{key_id}/rotate", params={"grace_s": grace})
            assert (response.status_code, response.json()["code"]) == (400, "malformed_request"), (grace, response.text)
        after = (await client.get("/v1/admin/keys", params={"tenant": world.owned["tenant"]})).json()
    assert after == before
