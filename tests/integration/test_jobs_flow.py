"""Batch jobs end to end in one event loop: the API, a worker pool, real Redis and Postgres."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from apikit import Api, running, tuned
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from worker_harness import running_pool, select, worker_settings

from inferq.cli.demo import build as build_demo
from inferq.contracts.models import ModelVersion
from inferq.contracts.names import Names
from inferq.engine import read_signature
from inferq.settings import Settings
from inferq.store.registry import Registry

FEATURES = ("sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm")
GOOD_ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
async def iris(registry: Registry) -> ModelVersion:
    onnx = build_demo("iris", 1).onnx
    return await registry.register(name=f"iris-{secrets.token_hex(4)}", model=onnx, signature=read_signature(onnx))


@pytest.fixture
def job_settings(settings: Settings) -> Settings:
    import msgspec

    base = tuned(worker_settings(settings))
    return msgspec.structs.replace(base, jobs=msgspec.structs.replace(base.jobs, chunk_rows=100))


@pytest.fixture
async def api(job_settings: Settings) -> AsyncIterator[Api]:
    async with running(job_settings) as api:
        yield api


async def wait_terminal(client: httpx.AsyncClient, job_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        body: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if body["status"] not in ("queued", "running"):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"job still {body['status']}: {body}"
        await asyncio.sleep(0.1)


def jsonl(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


async def bulk_length(api: Api, version: ModelVersion) -> int:
    names = Names(api.settings.services.key_prefix)
    redis = api.app.state.services.predictions._redis  # the app's own client
    return int(await redis.xlen(names.bulk_stream(names.partition(version.model, version.version))))


async def test_inline_job_runs_every_row_once_and_keeps_bad_rows_apart(
    api: Api, iris: ModelVersion, job_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    inputs: list[Any] = [[5.0 + i / 100, 3.0, 1.5, 0.2] for i in range(250)]
    inputs[7] = [1.0, 2.0]  # too narrow
    inputs[180] = {"sepal_length_cm": 1.0}  # a record missing features
    custom_ids = [f"row-{i}" for i in range(250)]
    submitted = await api.client.post("/v1/jobs", json={"model": iris.key, "inputs": inputs, "custom_ids": custom_ids})
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["status"], job["counts"]["total"], job["version"]) == ("queued", 250, iris.version)

    async with running_pool(job_settings, sessionmaker, select(iris)):
        done = await wait_terminal(api.client, job["id"])
    assert done["status"] == "succeeded"
    assert done["counts"] == {"total": 250, "succeeded": 248, "failed": 2}
    assert done["progress"] == 1.0
    assert done["started_at"] is not None
    assert done["finished_at"] is not None

    results = jsonl(await api.client.get(f"/v1/jobs/{job['id']}/results.jsonl"))
    errors = jsonl(await api.client.get(f"/v1/jobs/{job['id']}/errors.jsonl"))
    assert sorted(r["custom_id"] for r in results) == sorted(c for i, c in enumerate(custom_ids) if i not in (7, 180))
    assert all(r["status"] == "succeeded" and r["prediction"]["class_name"] for r in results)
    assert {(e["custom_id"], e["index"], e["error"]["code"]) for e in errors} == {
        ("row-7", 7, "invalid_input"),
        ("row-180", 180, "invalid_input"),
    }
    seen, cursor = [], None
    while True:
        page = (
            await api.client.get(
                f"/v1/jobs/{job['id']}/results", params={"limit": 37, **({"cursor": cursor} if cursor else {})}
            )
        ).json()
        seen += [line["index"] for line in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == list(range(250))
    assert await bulk_length(api, iris) == 0  # every chunk acked and deleted


async def test_idempotency_key_returns_the_same_job_or_a_conflict(api: Api, iris: ModelVersion) -> None:
    body = {"model": iris.key, "inputs": [GOOD_ROW] * 3}
    key = {"Idempotency-Key": secrets.token_hex(8)}
    first = await api.client.post("/v1/jobs", json=body, headers=key)
    again = await api.client.post("/v1/jobs", json=body, headers=key)
    other = await api.client.post("/v1/jobs", json={**body, "inputs": [GOOD_ROW] * 4}, headers=key)
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 409)
    assert again.json()["id"] == first.json()["id"]
    assert other.json()["code"] == "idempotency_conflict"


async def test_upload_reports_bad_lines_by_number_and_runs_the_rest(
    api: Api, iris: ModelVersion, job_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    lines = [json.dumps({"custom_id": f"c{i}", "inputs": GOOD_ROW}) for i in range(5)]
    lines.insert(2, '{"custom_id": "broken", "inputs": [1, 2')
    lines.insert(4, json.dumps({"custom_id": "wide", "inputs": [*GOOD_ROW, 9.0]}))
    content = ("\n".join(lines) + "\n").encode()
    files = {"file": ("rows.jsonl", content, "application/jsonl")}
    submitted = await api.client.post("/v1/jobs", data={"model": iris.key}, files=files)
    assert submitted.status_code == 202, submitted.text
    csv = "custom_id," + ",".join(FEATURES) + "\n" + "a,5.1,3.5,1.4,0.2\nb,5.1,x,1.4,0.2\n"
    csv_job = await api.client.post("/v1/jobs", data={"model": iris.key}, files={"file": ("rows.csv", csv, "text/csv")})
    assert csv_job.status_code == 202, csv_job.text
    async with running_pool(job_settings, sessionmaker, select(iris)):
        done = await wait_terminal(api.client, submitted.json()["id"])
        csv_done = await wait_terminal(api.client, csv_job.json()["id"])
    assert done["counts"] == {"total": 7, "succeeded": 5, "failed": 2}
    errors = jsonl(await api.client.get(f"/v1/jobs/{done['id']}/errors.jsonl"))
    assert sorted((e["line"], e["custom_id"]) for e in errors) == [(3, None), (5, "wide")]
    assert csv_done["counts"] == {"total": 2, "succeeded": 1, "failed": 1}
    [csv_error] = jsonl(await api.client.get(f"/v1/jobs/{csv_done['id']}/errors.jsonl"))
    assert (csv_error["custom_id"], csv_error["line"]) == ("b", 3)


async def test_cancel_skips_queued_chunks(
    api: Api, iris: ModelVersion, job_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    submitted = (await api.client.post("/v1/jobs", json={"model": iris.key, "inputs": [GOOD_ROW] * 300})).json()
    assert await bulk_length(api, iris) == 3
    canceled = await api.client.post(f"/v1/jobs/{submitted['id']}/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    again = await api.client.post(f"/v1/jobs/{submitted['id']}/cancel")
    assert (again.status_code, again.json()["code"]) == (409, "job_finished")
    async with running_pool(job_settings, sessionmaker, select(iris)):
        deadline = asyncio.get_running_loop().time() + 10
        while await bulk_length(api, iris) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    job = (await api.client.get(f"/v1/jobs/{submitted['id']}")).json()
    assert job["status"] == "canceled"
    assert job["counts"] == {"total": 300, "succeeded": 0, "failed": 0}
    assert await bulk_length(api, iris) == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "no-such-model", "inputs": [GOOD_ROW]}, 404, "model_not_found"),
        ({"model": "{m}", "inputs": []}, 422, "invalid_input"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "custom_ids": ["a", "b"]}, 422, "invalid_input"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "completion_window": "soon"}, 422, "invalid_input"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "webhook": {"url": "http://127.0.0.1:9/hook"}}, 422,
         "unsafe_webhook_url"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "webhook": {"url": "http://169.254.169.254/"}}, 422,
         "unsafe_webhook_url"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "surprise": 1}, 400, "malformed_request"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "webhook": {"url": "http://no-such-host.invalid/h"}}, 422,
         "unsafe_webhook_url"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "custom_ids": ["x" * 257]}, 400, "malformed_request"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "custom_ids": ["nul\u0000id"]}, 422, "invalid_input"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "metadata": {"k": "v\u0000"}}, 422, "invalid_input"),
        ({"model": "{m}", "inputs": [GOOD_ROW], "metadata": {f"k{i}": "v" for i in range(17)}}, 400,
         "malformed_request"),
    ],
)  # fmt: skip
async def test_bad_submissions_are_problems_and_nothing_is_enqueued(
    api: Api, iris: ModelVersion, body: dict[str, Any], status: int, code: str
) -> None:
    body = {**body, "model": body["model"].replace("{m}", iris.key)}
    response = await api.client.post("/v1/jobs", json=body)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert await bulk_length(api, iris) == 0
    assert (await api.client.get("/v1/jobs", params={"model": iris.model})).json()["data"] == []


async def test_deep_json_is_a_400_on_the_hot_route_and_on_jobs(api: Api, iris: ModelVersion) -> None:
    deep = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for path in (f"/v1/models/{iris.key}/predict", "/v1/jobs"):
        response = await api.client.post(path, content=deep, headers={"content-type": "application/json"})
        assert (response.status_code, response.json()["code"]) == (400, "malformed_request"), path
        assert "x-request-id" in response.headers


async def test_other_job_routes_404_for_unknown_ids(api: Api) -> None:
    unknown = ["/v1/jobs/job_%00", "/v1/jobs/job_" + "0" * 32, "/v1/jobs/job_nope"]
    unknown += [f"/v1/jobs/job_nope/{tail}" for tail in ("results", "results.jsonl", "events", "webhooks")]
    for path in unknown:
        response = await api.client.get(path)
        assert response.status_code == 404, path
    assert (await api.client.post("/v1/jobs/job_nope/cancel")).status_code == 404


async def test_events_stream_until_terminal(
    api: Api, iris: ModelVersion, job_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    job = (await api.client.post("/v1/jobs", json={"model": iris.key, "inputs": [GOOD_ROW] * 120})).json()
    statuses: list[str] = []
    async with (
        running_pool(job_settings, sessionmaker, select(iris)),
        api.client.stream("GET", f"/v1/jobs/{job['id']}/events") as events,
    ):
        assert events.headers["content-type"].startswith("text/event-stream")
        async for line in events.aiter_lines():
            if line.startswith("data:"):
                statuses.append(json.loads(line[5:])["status"])
    assert statuses[0] in ("queued", "running")
    assert statuses[-1] == "succeeded"
    listed = (await api.client.get("/v1/jobs", params={"model": iris.model, "status": "succeeded"})).json()
    assert [j["id"] for j in listed["data"]] == [job["id"]]


async def test_a_201_mb_upload_is_refused_early_and_nothing_is_stored(api: Api, iris: ModelVersion) -> None:
    line = json.dumps({"inputs": GOOD_ROW}).ljust(999_999).encode() + b"\n"  # 1 MB of JSON per line
    assert len(line) == 1_000_000
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n' + iris.key.encode() + b"\r\n"
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
        for _ in range(201):
            sent += len(line)
            yield line
        yield b"\r\n--b--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=b"}
    streamed = await api.client.post("/v1/jobs", content=body(), headers=headers)
    assert (streamed.status_code, streamed.json()["code"]) == (413, "payload_too_large")
    assert sent <= 202_000_000  # refused as the limit passed, not after some unbounded read
    assert await declared_too_large(api) == 413
    assert await bulk_length(api, iris) == 0
    assert (await api.client.get("/v1/jobs", params={"model": iris.model})).json()["data"] == []


async def declared_too_large(api: Api) -> int:
    """A body whose Content-Length is over the limit (200 MB of file + 1 MiB for the form) is refused
    before any of it is read (raw ASGI: HTTP clients set Content-Length themselves)."""
    reads, sent = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/jobs", "raw_path": b"/v1/jobs", "query_string": b"", "root_path": "", "client": ("t", 1),
        "server": ("api", 80), "state": {},
        "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"content-length", b"202000000"),
                    (b"authorization", f"Bearer {api.key}".encode())],
    }  # fmt: skip
    await api.app(scope, receive, send)  # type: ignore[arg-type]
    assert reads == 0
    return int(sent[0]["status"])


async def test_postgres_failing_to_store_results_never_dead_letters_good_rows(
    api: Api, iris: ModelVersion, job_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """While a chunk's results cannot be stored, its entry is left pending without counting a delivery:
    however many times it is reclaimed and run again meanwhile, it is never dead-lettered for it."""
    from sqlalchemy import text

    job = (await api.client.post("/v1/jobs", json={"model": iris.key, "inputs": [GOOD_ROW] * 50})).json()
    guard = f"refuse_{secrets.token_hex(4)}"
    async with sessionmaker.begin() as session:
        await session.execute(text(
            f"CREATE FUNCTION {guard}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.job_id = '{job['id']}' THEN RAISE EXCEPTION 'storage refused'; END IF; RETURN NEW; END $$"
        ))  # fmt: skip
        await session.execute(
            text(f"CREATE TRIGGER {guard} BEFORE UPDATE ON job_chunks FOR EACH ROW EXECUTE FUNCTION {guard}()")
        )
    fast = worker_settings(job_settings, reclaim_min_idle_ms=200, reclaim_interval_ms=50, max_deliveries=2)
    try:
        async with running_pool(fast, sessionmaker, select(iris)):
            await asyncio.sleep(2.0)  # ~10 reclaims at 200 ms min-idle, each one failing to store
            stuck = (await api.client.get(f"/v1/jobs/{job['id']}")).json()
            async with sessionmaker.begin() as session:
                await session.execute(text(f"DROP TRIGGER {guard} ON job_chunks"))
                await session.execute(text(f"DROP FUNCTION {guard}()"))
            done = await wait_terminal(api.client, job["id"])
    finally:
        async with sessionmaker.begin() as session:
            await session.execute(text(f"DROP TRIGGER IF EXISTS {guard} ON job_chunks"))
            await session.execute(text(f"DROP FUNCTION IF EXISTS {guard}()"))
    assert (stuck["status"], stuck["counts"]["succeeded"] + stuck["counts"]["failed"]) == ("queued", 0)
    assert done["status"] == "succeeded"
    assert done["counts"] == {"total": 50, "succeeded": 50, "failed": 0}
    names = Names(api.settings.services.key_prefix)
    redis = api.app.state.services.predictions._redis
    assert await redis.xlen(names.dead_letters(names.partition(iris.model, iris.version))) == 0
