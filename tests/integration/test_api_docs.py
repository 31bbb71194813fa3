"""OpenAPI at /schema (with a docs page whose scripts are served here, not by a CDN) and /metrics."""

from __future__ import annotations

import re

import pytest
import redis.asyncio as aioredis
from apikit import Responder, register_model, running, tuned

from inferq.settings import Settings
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration

ROUTES = {
    "/v1/models/{model}/predict": "post",
    "/v1/models/{model}/versions/{version}/predict": "post",
    "/v1/predictions/{prediction_id}": "get",
    "/v1/models": "get",
    "/v1/models/{model}": "get",
    "/v1/models/{model}/stats": "get",
    "/v1/models/{model}/compare": "get",
    "/v1/models/{model}/versions": "post",
    "/v1/models/{model}/versions/{version}": "delete,get,patch",
    "/v1/models/{model}/aliases/{alias}": "delete,get,put",
    "/health/live": "get",
    "/health/ready": "get",
    "/health/backlog": "get",
    "/v2": "get",
    "/v2/health/live": "get",
    "/v2/health/ready": "get",
    "/v2/models/{model}": "get",
    "/v2/models/{model}/versions/{version}": "get",
    "/v2/models/{model}/ready": "get",
    "/v2/models/{model}/versions/{version}/ready": "get",
    "/v2/models/{model}/infer": "post",
    "/v2/models/{model}/versions/{version}/infer": "post",
    "/v2/predictions/{prediction_id}": "get",
    "/v1/jobs": "get,post",
    "/v1/jobs/{job_id}": "get",
    "/v1/jobs/{job_id}/cancel": "post",
    "/v1/jobs/{job_id}/results": "get",
    "/v1/jobs/{job_id}/results.jsonl": "get",
    "/v1/jobs/{job_id}/errors.jsonl": "get",
    "/v1/jobs/{job_id}/events": "get",
    "/v1/jobs/{job_id}/webhooks": "get",
    "/v1/jobs/{job_id}/webhooks/{delivery_id}/replay": "post",
    "/v1/webhooks/secret": "get",
    "/v1/webhooks/secret/rotate": "post",
    "/v1/admin/keys": "get,post",
    "/v1/admin/keys/{key_id}": "delete",
    "/v1/admin/keys/{key_id}/rotate": "post",
    "/v1/admin/tenants/{tenant}/limits": "get,put",
}


async def test_openapi_document_lists_the_routes_and_their_problems(settings: Settings, migrated_db: str) -> None:
    async with running(tuned(settings)) as api:
        response = await api.client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert {path: ",".join(sorted(ops)) for path, ops in document["paths"].items()} == ROUTES
    predict = document["paths"]["/v1/models/{model}/predict"]["post"]
    assert {"200", "202", "400", "404", "413", "422", "503", "504"} <= set(predict["responses"])
    assert "PredictBody" in document["components"]["schemas"]
    assert document["components"]["schemas"]["PredictBody"]["required"] == ["inputs"]


async def test_docs_page_loads_only_scripts_served_by_the_api(settings: Settings, migrated_db: str) -> None:
    async with running(tuned(settings)) as api:
        page = await api.client.get("/schema")
        assert page.status_code == 200
        assert "SwaggerUIBundle" in page.text
        sources = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert sources
        assert all(s.startswith("/schema/static/") for s in sources), sources
        for source in sources:
            asset = await api.client.get(source)
            assert asset.status_code == 200, source
            assert len(asset.content) > 100
        swagger = await api.client.get("/schema/swagger")
    assert swagger.status_code == 200


async def test_metrics_count_requests_by_route_and_predictions_by_outcome(
    settings: Settings, redis_client: aioredis.Redis, registry: Registry, model_name: str
) -> None:
    await register_model(registry, model_name)
    async with running(tuned(settings)) as api:
        async with Responder(redis_client, api.settings, model_name, 2):
            for _ in range(3):
                ok = await api.client.post(f"/v1/models/{model_name}@2/predict", json={"inputs": [[1, 2, 3, 4]]})
                assert ok.status_code == 200
        bad = await api.client.post(f"/v1/models/{model_name}/predict", json={"inputs": [[1, 2]]})
        assert bad.status_code == 422
        accepted = await api.client.post(
            f"/v1/models/{model_name}/predict", json={"inputs": [[1, 2, 3, 4]]}, headers={"Prefer": "wait=0"}
        )
        assert accepted.status_code == 202
        response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = set(response.text.splitlines())
    route = "/v1/models/{model}/predict"
    expected = {
        f'inferq_api_requests_total{{method="POST",route="{route}",status="200"}} 3.0',
        f'inferq_api_requests_total{{method="POST",route="{route}",status="422"}} 1.0',
        f'inferq_api_requests_total{{method="POST",route="{route}",status="202"}} 1.0',
        f'inferq_api_predictions_total{{model="{model_name}",outcome="succeeded",version="2"}} 3.0',
        f'inferq_api_predictions_total{{model="{model_name}",outcome="invalid_input",version="1"}} 1.0',
        f'inferq_api_predictions_total{{model="{model_name}",outcome="accepted",version="1"}} 1.0',
        f'inferq_api_request_duration_seconds_count{{route="{route}"}} 5.0',
        "inferq_api_held_requests 0.0",
    }
    assert expected <= lines, sorted(expected - lines)
