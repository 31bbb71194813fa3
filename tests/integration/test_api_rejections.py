"""Every bad request is a 4xx problem with its domain code, and nothing reaches any stream."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from apikit import register_model, running, tuned

from inferq.settings import Settings
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration

GOOD = b'{"inputs": [[1, 2, 3, 4]]}'


@pytest.fixture
async def model(registry: Registry, model_name: str) -> str:
    await register_model(registry, model_name)
    return model_name


# (name, path under /v1/models/, body bytes, headers, status, code, expected details subset)
CASES: list[tuple[str, str, bytes, dict[str, str], int, str, dict[str, Any]]] = [
    ("malformed-json", "{m}/predict", b'{"inputs": [[1, 2', {}, 400, "malformed_request", {}),
    ("nan-literal", "{m}/predict", b'{"inputs": [[1, 2, 3, NaN]]}', {}, 400, "malformed_request", {}),
    ("not-an-object", "{m}/predict", b"[[1, 2, 3, 4]]", {}, 400, "malformed_request", {}),
    ("no-inputs", "{m}/predict", b"{}", {}, 400, "malformed_request", {}),
    ("unknown-field", "{m}/predict", b'{"inputs": [[1, 2, 3, 4]], "model": "x"}', {}, 400, "malformed_request", {}),
    ("string-for-number", "{m}/predict", b'{"inputs": [[1, "2", 3, 4]]}', {}, 422, "invalid_input",
     {"row": 0, "field": "b"}),
    ("wrong-width", "{m}/predict", b'{"inputs": [[1, 2, 3, 4], [1, 2, 3]]}', {}, 422, "invalid_input",
     {"row": 1, "expected": 4, "got": 3}),
    ("missing-feature", "{m}/predict", b'{"inputs": [{"a": 1, "b": 2, "c": 3}]}', {}, 422, "invalid_input",
     {"row": 0, "field": "d"}),
    ("unknown-feature", "{m}/predict", b'{"inputs": [{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}]}', {}, 422,
     "invalid_input", {"row": 0, "field": "e"}),
    ("infinity", "{m}/predict", b'{"inputs": [[1, 2, 1e999, 4]]}', {}, 400, "malformed_request", {}),
    ("nan-string", "{m}/predict", b'{"inputs": [[1, 2, "NaN", 4]]}', {}, 422, "invalid_input",
     {"row": 0, "field": "c"}),
    ("empty", "{m}/predict", b'{"inputs": []}', {}, 422, "invalid_input", {}),
    ("wrong-tensor-name", "{m}/predict", b'{"inputs": {"Y": [[1, 2, 3, 4]]}}', {}, 422, "invalid_input", {}),
    ("too-many-values", "{m}/predict", b'{"inputs": [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]}', {}, 422,
     "invalid_input", {"elements": 12, "limit": 8}),
    ("unknown-model", "nope-{m}/predict", GOOD, {}, 404, "model_not_found", {}),
    ("bad-model-name", "Not%20A%20Name/predict", GOOD, {}, 404, "model_not_found", {}),
    ("unknown-version", "{m}@9/predict", GOOD, {}, 404, "version_not_found", {"versions": [1, 2]}),
    ("unknown-version-route", "{m}/versions/9/predict", GOOD, {}, 404, "version_not_found", {}),
    ("non-numeric-version-route", "{m}/versions/two/predict", GOOD, {}, 404, "version_not_found", {}),
    ("unknown-alias", "{m}@staging/predict", GOOD, {}, 404, "alias_not_found", {"aliases": ["default", "prod"]}),
    ("bad-prefer", "{m}/predict", GOOD, {"Prefer": "wait=soon"}, 400, "malformed_request", {"header": "Prefer"}),
    ("bad-cancel-after", "{m}/predict", GOOD, {"Cancel-After": "soon"}, 400, "malformed_request",
     {"header": "Cancel-After"}),
    ("zero-cancel-after", "{m}/predict", GOOD, {"Cancel-After": "0"}, 400, "malformed_request", {}),
    ("huge-cancel-after", "{m}/predict", GOOD, {"Cancel-After": "99999999"}, 400, "malformed_request", {}),
    ("body-too-large", "{m}/predict", b'{"inputs": [[' + b"1, " * 200 + b"1]]}", {}, 413, "payload_too_large", {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code", "details"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_requests_are_problems_and_nothing_is_enqueued(
    settings: Settings,
    redis_client: aioredis.Redis,
    model: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
    details: dict[str, Any],
) -> None:
    tight = tuned(settings, api__max_elements=8, api__max_body_bytes=512, api__deadline_max_s=3600.0)
    async with running(tight) as api:
        response = await api.client.post(
            f"/v1/models/{path.format(m=model)}",
            content=body,
            headers={"Content-Type": "application/json", "Prefer": "wait=0", **headers},
        )
        backlog = [await redis_client.xlen(api.work_stream(model, v)) for v in (1, 2)]
        # The same app does enqueue a good request: the XLEN check above can see one.
        control = await api.client.post(f"/v1/models/{model}/predict", content=GOOD, headers={"Prefer": "wait=0"})
        after = await redis_client.xlen(api.work_stream(model, 1))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == f"urn:inferq:problem:{code}"
    assert problem["detail"]
    assert details.items() <= problem.get("details", {}).items()
    assert backlog == [0, 0]
    assert control.status_code == 202
    assert after == 1


async def test_unknown_routes_and_methods_are_problems_too(settings: Settings, model: str) -> None:
    async with running(tuned(settings)) as api:
        missing = await api.client.get("/v1/nothing-here")
        wrong_method = await api.client.get(f"/v1/models/{model}/predict")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")
    assert wrong_method.headers["content-type"] == "application/problem+json"
