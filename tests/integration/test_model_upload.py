"""``POST /v1/models/{model}/versions``: an ONNX upload validated in a child process and registered as the next
version, served by a worker with the names it was uploaded with; every bad upload a problem and nothing registered."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import pickle
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import joblib
import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
from apikit import Api, running, tuned
from onnx import helper
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from unit import upload_models as models
from worker_harness import running_pool, select, wait_for, worker_settings

from inferq.cli import model_admin
from inferq.cli.main import build_parser
from inferq.contracts.names import Names
from inferq.engine import read_signature
from inferq.errors import Conflict, InferqError, InvalidModel, ModelNotFound
from inferq.settings import Settings
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration

MB = 1024 * 1024
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def upload_settings(settings: Settings, **api: Any) -> Settings:
    """Uploads capped at 1 MB (the validator's memory limit follows: 1 GiB + 6 MB), fast waits."""
    tuned_settings = tuned(settings, queue__wait_max_s=30.0, **{f"api__{k}": v for k, v in api.items()})
    engine = msgspec.structs.replace(tuned_settings.engine, max_model_bytes=MB)
    return msgspec.structs.replace(tuned_settings, engine=engine)


@pytest.fixture
async def api(settings: Settings, migrated_db: str) -> AsyncIterator[Api]:
    async with running(upload_settings(settings)) as running_api:
        yield running_api


@pytest.fixture
def name() -> str:
    return f"up-{secrets.token_hex(5)}"


def unique(model: bytes) -> bytes:
    """``model`` with a doc string of its own: bytes (and an artifact sha256) no other test uploads."""
    return models.with_doc(model, secrets.token_hex(8))


def form(file: bytes | None, **fields: Any) -> dict[str, Any]:
    """httpx arguments for a multipart upload: JSON-encoded list/dict fields, then the file."""
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    if file is not None:
        return {"data": data, "files": {"file": ("model.onnx", file, "application/octet-stream")}}
    parts = "".join(f'--b\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in data.items())
    return {"content": f"{parts}--b--\r\n".encode(), "headers": {"Content-Type": "multipart/form-data; boundary=b"}}


async def registered(registry: Registry, name: str) -> list[int]:
    """The versions of ``name`` in Postgres (none when the model does not exist)."""
    try:
        return [v.version for v in (await registry.get_model(name)).versions]
    except ModelNotFound:
        return []


async def artifact_exists(sessionmaker: async_sessionmaker[AsyncSession], data: bytes) -> bool:
    sha = hashlib.sha256(data).hexdigest()
    async with sessionmaker() as session:
        found = await session.scalar(text("SELECT count(*) FROM artifacts WHERE sha256 = :sha"), {"sha": sha})
    return bool(found)


async def predict(api: Api, model: str) -> httpx.Response:
    """Records keyed by feature name, held until the worker answers."""
    records = [dict(zip(FEATURES, row, strict=True)) for row in ROWS]
    return await api.client.post(f"/v1/models/{model}/predict", json={"inputs": records}, headers={"Prefer": "wait=30"})


async def test_an_upload_is_registered_with_its_names_and_served_by_a_worker(
    api: Api,
    name: str,
    registry: Registry,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_client: aioredis.Redis,
) -> None:
    upload = models.unnamed_classifier()
    response = await api.client.post(
        f"/v1/models/{name}/versions",
        **form(upload, description="iris, uploaded", feature_names=FEATURES, class_names=CLASSES,
               overrides={"max_batch": 16}),
    )  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/models/{name}/versions/1"
    view = response.json()
    assert (view["version"], view["status"], view["ready"], view["description"]) == (
        1,
        "active",
        False,
        "iris, uploaded",
    )
    assert view["overrides"] == {"max_batch": 16}
    signature = view["signature"]
    assert (signature["feature_names"], signature["class_names"], signature["classes"]) == (
        FEATURES,
        CLASSES,
        [0, 1, 2],
    )
    # The artifact is the upload with the names written in: what every worker reads.
    version = await registry.get_version(name, 1)
    stored = await registry.artifact(version.sha256)
    assert hashlib.sha256(stored).hexdigest() == view["sha256"] == version.sha256
    assert (view["size_bytes"], version.signature) == (len(stored), read_signature(stored))
    info = await registry.get_model(name)
    assert {a.name: a.weights for a in info.aliases} == {"default": {1: 100}}
    assert (await api.client.get(f"/v1/models/{name}")).json()["versions"][0]["sha256"] == version.sha256

    again = await api.client.post(f"/v1/models/{name}/versions", **form(upload))
    assert again.status_code == 201, again.text
    assert again.json()["version"] == 2
    assert again.json()["sha256"] == hashlib.sha256(upload).hexdigest()  # no names sent: stored as uploaded
    assert {a.name: a.weights for a in (await registry.get_model(name)).aliases} == {"default": {1: 100}}

    names = Names(api.settings.services.key_prefix)
    async with running_pool(worker_settings(api.settings), sessionmaker, select(version)):

        async def alive() -> bool:
            return bool(await redis_client.exists(names.alive(names.partition(name, 1))))

        await wait_for(alive, timeout_s=60, what="the worker to consume the uploaded version")
        served = await predict(api, name)
    assert served.status_code == 200, served.text
    body = served.json()
    assert body["version"] == 1
    assert [p["class_name"] for p in body["predictions"]] == ["setosa", "virginica"]
    assert set(body["predictions"][0]["probabilities"]) == set(CLASSES)


REFUSED = [
    ("truncated", lambda: models.truncated(models.unnamed_classifier()), {}, 422, "invalid_model",
     r"^not a valid ONNX model: "),
    ("fixed batch", models.fixed_batch, {}, 422, "invalid_model",
     r"^input 'x' has no dynamic batch dimension \(shape \[1, 4\]\)"),
    ("external data", models.external_data, {}, 422, "invalid_model",
     r"^initializer 'w' uses external data; embed the weights instead$"),
    ("custom op domain", models.custom_domain, {}, 422, "invalid_model",
     r"^custom operator domain 'com.evil' is not supported$"),
    ("pickle renamed .onnx", lambda: pickle.dumps({"coef": [1.0, 2.0]}, protocol=5), {}, 422, "invalid_model",
     r"^the file is a Python pickle \(protocol 5.*`inferq models import FILE --name NAME`"),
    ("joblib", lambda: _joblib(0), {}, 422, "invalid_model", r"^the file is a Python pickle \(protocol [45]"),
    ("joblib compressed", lambda: _joblib(3), {}, 422, "invalid_model", r"^the file is zlib-compressed data"),
    ("empty", lambda: b"", {}, 422, "invalid_model", r"^the file is empty"),
    ("over the cap", lambda: models.big_initializer(2 * MB), {}, 413, "payload_too_large",
     r"^the model file is over the limit of 1,048,576 bytes"),
    ("needs too much memory", models.memory_bomb, {}, 422, "invalid_model", r"Failed to allocate memory|more memory"),
    ("class names of a regressor", models.identity, {"class_names": ["a"]}, 422, "invalid_model",
     r"^class names were given, but the model is a regressor model"),
    ("too few feature names", models.unnamed_classifier, {"feature_names": ["a"]}, 422, "invalid_model",
     r"has 1 names but input 'input' has 4 columns"),
    ("names not JSON", models.unnamed_classifier, {"feature_names": "a,b,c,d"}, 400, "malformed_request",
     r"^form field 'feature_names' must be a JSON array of strings"),
    ("unknown field", models.unnamed_classifier, {"model": "x"}, 400, "malformed_request", r"^unknown form fields"),
    ("bad overrides", models.unnamed_classifier, {"overrides": {"max_batch": "x"}}, 400, "malformed_request",
     r"^form field 'overrides'"),
    ("no file part", lambda: None, {"description": "x"}, 400, "malformed_request", r"no file part"),
    ("negative dimension", lambda: models.build([helper.make_node("Identity", ["x"], ["y"])], x=(None, -5),
     y=(None, -5), check=False), {}, 422, "invalid_model", r"negative dimension|not a valid ONNX model"),
    ("unknown override", models.identity, {"overrides": {"max_btach": 8}}, 422, "invalid_input",
     r"^unknown serving override 'max_btach'; known: "),
    ("override out of range", models.identity, {"overrides": {"result_cache_ttl_s": 1e20}}, 422, "invalid_input",
     r"^serving override 'result_cache_ttl_s' must be between 0 and 2592000"),
]  # fmt: skip


def _joblib(compress: int) -> bytes:
    buffer = io.BytesIO()
    joblib.dump({"coef": np.ones((3, 4))}, buffer, compress=compress)
    return buffer.getvalue()


@pytest.mark.parametrize(("case", "build", "fields", "status", "code", "message"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_bad_uploads_are_problems_and_register_nothing(
    api: Api, name: str, registry: Registry, case: str, build: Any, fields: dict[str, Any], status: int, code: str,
    message: str,
) -> None:  # fmt: skip
    response = await api.client.post(f"/v1/models/{name}/versions", **form(build(), **fields))
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert re.search(message, response.json()["detail"]), response.json()["detail"]
    assert await registered(registry, name) == []
    assert (await api.client.get(f"/v1/models/{name}")).status_code == 404


async def test_feature_names_too_long_for_a_command_line_still_reach_the_validator(
    api: Api, name: str, registry: Registry
) -> None:
    """One argv string is capped at 128 KiB: names go to the child in a file, so long ones are no 500."""
    long_name = "\U0001f600" * 16_000  # 64 KB of UTF-8 in the form, 192 KB as ASCII-escaped JSON
    names = json.dumps([long_name], ensure_ascii=False)
    response = await api.client.post(f"/v1/models/{name}/versions", **form(models.identity(), feature_names=names))
    assert response.status_code == 201, response.text
    assert (await registry.get_version(name, 1)).signature.feature_names == (long_name,)


async def test_a_bad_upload_leaves_an_existing_model_as_it_was(
    api: Api, name: str, registry: Registry, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    assert (await api.client.post(f"/v1/models/{name}/versions", **form(models.identity()))).status_code == 201
    for _case, build, fields, status, *_ in REFUSED:
        response = await api.client.post(f"/v1/models/{name}/versions", **form(build(), **fields))
        assert response.status_code == status
    # A failure inside the registry's transaction (Postgres refuses a NUL) rolls the artifact back too.
    data = unique(models.identity())
    refused = await api.client.post(f"/v1/models/{name}/versions", **form(data, description="nul \x00 inside"))
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_input"), refused.text
    assert not await artifact_exists(sessionmaker, data)
    assert await registered(registry, name) == [1]
    accepted = await api.client.post(f"/v1/models/{name}/versions", **form(data))
    assert accepted.json()["version"] == 2  # numbers are assigned at commit: none was used up
    assert await artifact_exists(sessionmaker, data)


async def test_uploads_need_the_admin_scope(api: Api, name: str, registry: Registry) -> None:
    key = await api.key_for("default", "predict", "jobs")
    async with api.as_key(key) as client:
        response = await client.post(f"/v1/models/{name}/versions", **form(models.identity()))
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    async with api.as_key("iq_" + "0" * 16 + "_" + "0" * 48) as client:
        response = await client.post(f"/v1/models/{name}/versions", **form(models.identity()))
    assert (response.status_code, response.json()["code"]) == (401, "unauthenticated")
    assert await registered(registry, name) == []


async def test_an_invalid_model_name_or_a_body_that_is_not_a_form(api: Api, registry: Registry) -> None:
    response = await api.client.post("/v1/models/Not%20Valid/versions", **form(models.identity()))
    assert (response.status_code, response.json()["code"]) == (422, "invalid_input")
    name = f"up-{secrets.token_hex(5)}"
    response = await api.client.post(f"/v1/models/{name}/versions", content=models.identity())
    assert (response.status_code, response.json()["code"]) == (400, "malformed_request")
    assert await registered(registry, name) == []


class Body:
    """A multipart body sent chunk by chunk, counting what the server pulled (``gate``: hold before the file)."""

    def __init__(self, file: bytes, *, chunk: int = 64 * 1024, gate: asyncio.Event | None = None) -> None:
        self.boundary = "upload-test-boundary"
        self.head = (f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
        self.file, self.chunk, self.gate, self.sent = file, chunk, gate, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        if self.gate is not None:
            await self.gate.wait()
        for start in range(0, len(self.file), self.chunk):
            self.sent += min(self.chunk, len(self.file) - start)
            yield self.file[start : start + self.chunk]
        yield f"\r\n--{self.boundary}--\r\n".encode()

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Content-Type": f"multipart/form-data; boundary={self.boundary}", **extra}


async def test_the_size_cap_is_enforced_up_front_and_while_streaming(api: Api, name: str, registry: Registry) -> None:
    declared = Body(b"\x08" * (5 * MB))
    response = await api.client.post(
        f"/v1/models/{name}/versions", content=declared, headers=declared.headers(**{"Content-Length": str(9 * MB)})
    )
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")
    assert declared.sent == 0  # refused on Content-Length, before the file was read
    streamed = Body(b"\x08" * (5 * MB))  # chunked: no Content-Length
    response = await api.client.post(f"/v1/models/{name}/versions", content=streamed, headers=streamed.headers())
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")
    assert MB < streamed.sent <= MB + 64 * 1024  # refused at the chunk that crossed the cap
    assert await registered(registry, name) == []


async def test_a_validator_past_its_timeout_is_a_503_and_registers_nothing(
    settings: Settings, migrated_db: str, name: str, registry: Registry
) -> None:
    async with running(upload_settings(settings, model_validate_timeout_s=0.05)) as api:
        response = await api.client.post(f"/v1/models/{name}/versions", **form(models.identity()))
    assert (response.status_code, response.json()["code"]) == (503, "service_unavailable"), response.text
    assert response.json()["detail"].startswith("the model validator did not finish within 0.05 s")
    assert response.headers["retry-after"] == "1"
    assert await registered(registry, name) == []


async def test_uploads_beyond_the_concurrency_are_503_with_retry_after(
    settings: Settings, migrated_db: str, name: str, registry: Registry
) -> None:
    async with running(upload_settings(settings, model_validate_concurrency=1)) as api:
        gate = asyncio.Event()
        held = Body(models.identity(), gate=gate)
        first = asyncio.create_task(
            api.client.post(f"/v1/models/{name}/versions", content=held, headers=held.headers())
        )
        await wait_for(lambda: _started(api, first), what="the first upload to take the slot")
        second = await api.client.post(f"/v1/models/{name}/versions", **form(models.identity()))
        assert (second.status_code, second.json()["code"]) == (503, "overloaded")
        assert second.headers["retry-after"] == "5"
        gate.set()
        assert (await first).status_code == 201
        third = await api.client.post(f"/v1/models/{name}/versions", **form(models.identity()))
        assert third.status_code == 201  # the slot is free again
    assert await registered(registry, name) == [1, 2]


async def _started(api: Api, task: asyncio.Task[httpx.Response]) -> bool:
    """The held upload took the only slot (its body is being read)."""
    assert not task.done(), task.result().text if task.done() else None
    return bool(api.app.state.services.uploads.busy == 1)


async def cli(api: Api, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """``inferq models …`` against the in-process app; what it printed on stdout."""
    args = build_parser().parse_args(["models", *argv, "--url", "http://api", "--key", api.key])
    capsys.readouterr()
    assert await model_admin.run(args, api.settings, transport=api.client._transport) == 0
    out = capsys.readouterr().out  # the app's log lines too (structlog writes to stdout in tests)
    return json.loads(out[out.rfind("\n{\n") + 1 :])  # the document emit() printed last


async def test_the_cli_uploads_shares_promotes_rolls_back_and_archives(
    api: Api, name: str, registry: Registry, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    first, second = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    first.write_bytes(models.unnamed_classifier())
    second.write_bytes(unique(models.unnamed_classifier()))
    names = ["--feature-names", ",".join(FEATURES), "--class-names", ",".join(CLASSES)]
    uploaded = await cli(api, capsys, "upload", str(first), "--name", name, *names, "--description", "first")
    assert (uploaded["version"], uploaded["signature"]["class_names"]) == (1, CLASSES)
    canary = await cli(api, capsys, "upload", str(second), "--name", name, "--alias", "default", "--weight", "10")
    assert (canary["version"], canary["alias"]["weights"]) == (2, {"1": 90, "2": 10})
    assert (await cli(api, capsys, "promote", name, "2"))["weights"] == {"2": 100}
    assert (await registry.get_alias(name, "default")).weights == {2: 100}
    rolled = await cli(api, capsys, "rollback", name)
    assert (rolled["weights"], rolled["previous"]) == ({"1": 90, "2": 10}, {"2": 100})
    assert (await cli(api, capsys, "promote", name, "1", "--alias", "stable"))["weights"] == {"1": 100}
    await cli(api, capsys, "promote", name, "1")
    archived = await cli(api, capsys, "archive", name, "2")
    assert archived["status"] == "archived"
    assert (await registry.get_version(name, 2)).status == "archived"
    assert {a.name: a.weights for a in (await registry.get_model(name)).aliases} == {
        "default": {1: 100},
        "stable": {1: 100},
    }


async def test_cli_refusals_name_the_problem(
    api: Api, name: str, registry: Registry, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    pickled = tmp_path / "model.onnx"
    pickled.write_bytes(pickle.dumps({"coef": [1.0]}, protocol=4))
    args = build_parser().parse_args(["models", "upload", str(pickled), "--name", name, "--url", "http://api",
                                      "--key", api.key])  # fmt: skip
    with pytest.raises(InvalidModel, match="inferq models import") as caught:
        await model_admin.run(args, api.settings, transport=api.client._transport)
    assert caught.value.details["status"] == 422
    good = tmp_path / "good.onnx"
    good.write_bytes(models.identity())
    await cli(api, capsys, "upload", str(good), "--name", name)
    args = build_parser().parse_args(["models", "archive", name, "1", "--url", "http://api", "--key", api.key])
    with pytest.raises(Conflict) as conflict:  # the default alias still routes to it
        await model_admin.run(args, api.settings, transport=api.client._transport)
    assert conflict.value.details["status"] == 409
    args = build_parser().parse_args(["models", "rollback", name, "--url", "http://api", "--key", api.key])
    with pytest.raises(InferqError, match="no previous weights"):
        await model_admin.run(args, api.settings, transport=api.client._transport)
    assert (await registry.get_version(name, 1)).status == "active"


async def test_concurrent_uploads_of_a_new_model_get_consecutive_versions(
    api: Api, name: str, registry: Registry
) -> None:
    first, second = await asyncio.gather(
        api.client.post(f"/v1/models/{name}/versions", **form(models.identity())),
        api.client.post(f"/v1/models/{name}/versions", **form(unique(models.identity()))),
    )
    assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
    assert sorted([first.json()["version"], second.json()["version"]]) == [1, 2]
    assert await registered(registry, name) == [1, 2]
