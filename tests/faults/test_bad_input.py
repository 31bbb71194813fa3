"""Bad requests against a real ``inferq serve`` process: each is a 4xx (v1: problem details with the domain
code; V2: ``{"error"}``), and nothing reaches any work stream (XLEN stays 0); a good request afterwards is
enqueued (the XLEN check can see one)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferq.contracts.models import ModelVersion
from inferq.store.migrate import upgrade

from .harness import Api, Stack, unique
from .models import affine_model, int_model

MAX_ELEMENTS = 8
MAX_BODY = 512
GOOD = b'{"inputs": [[1, 2, 3, 4]]}'


@dataclass
class BadInputWorld:
    stack: Stack
    api: Api
    http: httpx.AsyncClient
    floats: str  # float32 [None, 4], versions 1 and 2, aliases default and prod
    ints: str  # int64 [None, 2]
    versions: list[ModelVersion]

    async def backlog(self) -> dict[str, int]:
        redis = self.stack.client()
        return {v.key: int(await redis.xlen(self.stack.partition(v).work)) for v in self.versions}


@pytest.fixture(scope="module")
async def world(
    database_url: str, pepper: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BadInputWorld]:
    """One Redis and one serve process for the whole table (no worker: nothing may be enqueued)."""
    await upgrade(database_url)
    stack = await Stack.open(Path(tmp_path_factory.mktemp("bad-input")), database_url, pepper=pepper)
    try:
        floats, ints = unique("floats"), unique("ints")
        versions = [
            await stack.register(affine_model(), name=floats),
            await stack.register(affine_model(), name=floats, aliases=["prod"]),
            await stack.register(int_model(), name=ints),
        ]
        api = stack.serve(INFERQ_MAX_ELEMENTS=MAX_ELEMENTS, INFERQ_MAX_BODY_BYTES=MAX_BODY, INFERQ_DEADLINE_MAX_S=3600)
        await stack.api_ready(api)
        async with api.client(timeout_s=10) as http:
            yield BadInputWorld(stack, api, http, floats, ints, versions)
    finally:
        await stack.close()


DEEP = b'{"inputs": ' + b"[" * 240 + b"]" * 240 + b"}"  # valid JSON, 241 levels, under the body cap

# (id, path under /v1/models/ with {f} = float model, {i} = int model, body, headers, status, code, details ⊆)
CASES: list[Any] = [
    # malformed bodies
    ("malformed-json", "{f}/predict", b'{"inputs": [[1, 2', {}, 400, "malformed_request", {}),
    ("empty-body", "{f}/predict", b"", {}, 400, "malformed_request", {}),
    ("not-json", "{f}/predict", b"inputs=1,2,3,4", {}, 400, "malformed_request", {}),
    ("not-an-object", "{f}/predict", b"[[1, 2, 3, 4]]", {}, 400, "malformed_request", {}),
    ("no-inputs", "{f}/predict", b"{}", {}, 400, "malformed_request", {}),
    ("unknown-field", "{f}/predict", b'{"inputs": [[1, 2, 3, 4]], "model": "x"}', {}, 400, "malformed_request", {}),
    ("nan-literal", "{f}/predict", b'{"inputs": [[1, 2, 3, NaN]]}', {}, 400, "malformed_request", {}),
    ("infinity", "{f}/predict", b'{"inputs": [[1, 2, 1e999, 4]]}', {}, 400, "malformed_request", {}),
    ("truncated-json", "{f}/predict", b'{"inputs": [[1, 2, 3, 4]', {}, 400, "malformed_request", {}),
    ("trailing-garbage", "{f}/predict", b'{"inputs": [[1, 2, 3, 4]]}\xff', {}, 400, "malformed_request", {}),
    ("lone-surrogate", "{f}/predict", b'{"inputs": [["\\ud800", 2, 3, 4]]}', {}, 400, "malformed_request", {}),
    pytest.param("{f}/predict", b'{"inputs": [["\xff", 2, 3, 4]]}', {}, 400, "malformed_request", {},
                 id="invalid-utf8-in-string"),
    pytest.param("{f}/predict", b'{"inp\xffuts": [[1, 2, 3, 4]]}', {}, 400, "malformed_request", {},
                 id="invalid-utf8-in-key"),
    ("deep-nesting", "{f}/predict", DEEP, {}, 422, "invalid_input", {"row": 0}),
    ("inputs-a-string", "{f}/predict", b'{"inputs": "1,2,3,4"}', {}, 422, "invalid_input", {}),
    ("inputs-a-number", "{f}/predict", b'{"inputs": 4}', {}, 422, "invalid_input", {}),
    # wrong dtypes
    ("string-for-float", "{f}/predict", b'{"inputs": [[1, "2", 3, 4]]}', {}, 422, "invalid_input", {"row": 0}),
    ("null-for-float", "{f}/predict", b'{"inputs": [[1, null, 3, 4]]}', {}, 422, "invalid_input", {"row": 0}),
    ("nested-for-float", "{f}/predict", b'{"inputs": [[1, [2], 3, 4]]}', {}, 422, "invalid_input", {}),
    ("nan-string", "{f}/predict", b'{"inputs": [[1, 2, "NaN", 4]]}', {}, 422, "invalid_input", {"row": 0}),
    ("bool-for-float", "{f}/predict", b'{"inputs": [[true, 2, 3, 4]]}', {}, 422, "invalid_input", {"row": 0}),
    ("float32-overflow", "{f}/predict", b'{"inputs": [[1e39, 2, 3, 4]]}', {}, 422, "invalid_input", {"row": 0}),
    ("fraction-for-int", "{i}/predict", b'{"inputs": [[1.5, 2]]}', {}, 422, "invalid_input", {}),
    ("string-for-int", "{i}/predict", b'{"inputs": [["1", 2]]}', {}, 422, "invalid_input", {}),
    ("int64-overflow", "{i}/predict", b'{"inputs": [[99999999999999999999, 2]]}', {}, 422, "invalid_input", {}),
    # wrong shapes
    ("short-row", "{f}/predict", b'{"inputs": [[1, 2, 3]]}', {}, 422, "invalid_input", {"expected": 4, "got": 3}),
    ("ragged-rows", "{f}/predict", b'{"inputs": [[1, 2, 3, 4], [1, 2, 3]]}', {}, 422, "invalid_input",
     {"row": 1, "expected": 4, "got": 3}),
    ("scalar-rows", "{f}/predict", b'{"inputs": [1, 2, 3, 4]}', {}, 422, "invalid_input", {}),
    ("empty-rows", "{f}/predict", b'{"inputs": []}', {}, 422, "invalid_input", {}),
    ("empty-row", "{f}/predict", b'{"inputs": [[]]}', {}, 422, "invalid_input", {}),
    ("records-without-names", "{f}/predict", b'{"inputs": [{"a": 1}]}', {}, 422, "invalid_input", {}),
    ("wrong-tensor-name", "{f}/predict", b'{"inputs": {"X": [[1, 2, 3, 4]]}}', {}, 422, "invalid_input", {}),
    ("tensor-rank-1", "{f}/predict", b'{"inputs": {"x": [1, 2, 3, 4]}}', {}, 422, "invalid_input", {}),
    ("tensor-rank-3", "{f}/predict", b'{"inputs": {"x": [[[1, 2, 3, 4]]]}}', {}, 422, "invalid_input", {}),
    ("tensor-shape-data-mismatch", "{f}/predict", b'{"inputs": {"x": {"shape": [1, 4], "data": [1, 2, 3]}}}', {},
     422, "invalid_input", {}),
    # oversized tensors (element cap 8, body cap 512 bytes)
    ("too-many-values", "{f}/predict", b'{"inputs": [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]}', {}, 422,
     "invalid_input", {"elements": 12, "limit": MAX_ELEMENTS}),
    ("negative-declared-shape", "{f}/predict", b'{"inputs": {"x": {"shape": [-1, 4], "data": [1, 2, 3, 4]}}}',
     {}, 422, "invalid_input", {}),
    ("huge-declared-shape", "{f}/predict", b'{"inputs": {"x": {"shape": [1000000000, 4], "data": [1, 2, 3, 4]}}}',
     {}, 422, "invalid_input", {}),
    ("body-too-large", "{f}/predict", b'{"inputs": [[' + b"1, " * 200 + b"1]]}", {}, 413, "payload_too_large", {}),
    # unknown model / version / alias
    ("unknown-model", "nope-{f}/predict", GOOD, {}, 404, "model_not_found", {}),
    ("bad-model-name", "Not%20A%20Name/predict", GOOD, {}, 404, "model_not_found", {}),
    ("unknown-version", "{f}@9/predict", GOOD, {}, 404, "version_not_found", {"versions": [1, 2]}),
    ("unknown-version-route", "{f}/versions/9/predict", GOOD, {}, 404, "version_not_found", {}),
    ("non-numeric-version-route", "{f}/versions/two/predict", GOOD, {}, 404, "version_not_found", {}),
    ("unknown-alias", "{f}@staging/predict", GOOD, {}, 404, "alias_not_found", {"aliases": ["default", "prod"]}),
    # bad headers
    ("bad-prefer", "{f}/predict", GOOD, {"Prefer": "wait=soon"}, 400, "malformed_request", {"header": "Prefer"}),
    ("bad-cancel-after", "{f}/predict", GOOD, {"Cancel-After": "soon"}, 400, "malformed_request",
     {"header": "Cancel-After"}),
    ("zero-cancel-after", "{f}/predict", GOOD, {"Cancel-After": "0"}, 400, "malformed_request", {}),
    ("huge-cancel-after", "{f}/predict", GOOD, {"Cancel-After": "99999999"}, 400, "malformed_request", {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code", "details"),
    [c if hasattr(c, "marks") else pytest.param(*c[1:], id=c[0]) for c in CASES],  # pytest.param rows as they are
)
async def test_bad_request_is_a_problem_and_nothing_is_enqueued(
    world: BadInputWorld, path: str, body: bytes, headers: dict[str, str], status: int, code: str,
    details: dict[str, Any],
) -> None:  # fmt: skip
    response = await world.http.post(
        f"/v1/models/{path.format(f=world.floats, i=world.ints)}",
        content=body,
        headers={"Content-Type": "application/json", "Prefer": "respond-async", **headers},
    )
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["code"], problem["type"]) == (status, code, f"urn:inferq:problem:{code}")
    assert problem["detail"]
    assert details.items() <= problem.get("details", {}).items(), json.dumps(problem)
    assert await world.backlog() == dict.fromkeys((v.key for v in world.versions), 0)
    assert world.api.proc.alive()


def _v2(**changes: Any) -> bytes:
    """A V2 infer body for the float model (``x``: FP32 [-1, 4]) with ``changes`` to its one input."""
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4], **changes}
    return json.dumps({"inputs": [tensor]}).encode()


_BINARY_HEADER = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
).encode()
_FRAMED = {"Inference-Header-Content-Length": str(len(_BINARY_HEADER))}

# (id, path under /v2/models/, body, headers, status, a substring of the error)
V2_CASES: list[Any] = [
    ("malformed-json", "{f}/infer", b'{"inputs": [', {}, 400, "not valid JSON"),
    ("nan-literal", "{f}/infer", _v2().replace(b"[1, 2", b"[NaN, 2"), {}, 400, "not valid JSON"),
    pytest.param("{f}/infer", b'{"id": "\xff", "inputs": []}', {}, 400, "", id="invalid-utf8"),
    ("unknown-field", "{f}/infer", b'{"inputs": [], "foo": 1}', {}, 400, "unknown field"),
    ("no-inputs", "{f}/infer", b"{}", {}, 400, "inputs"),
    ("missing-input", "{f}/infer", b'{"inputs": []}', {}, 400, "missing input"),
    ("unknown-input", "{f}/infer", _v2(name="y"), {}, 400, "unknown input"),
    ("repeated-input", "{f}/infer", b'{"inputs": [' + _v2()[12:-2] + b", " + _v2()[12:-2] + b"]}", {}, 400, "twice"),
    ("fp64-for-fp32", "{f}/infer", _v2(datatype="FP64"), {}, 400, "datatype FP64"),
    ("unknown-datatype", "{f}/infer", _v2(datatype="FP17"), {}, 400, "unknown datatype"),
    ("fp32-for-int64", "{i}/infer", json.dumps({"inputs": [{"name": "i", "shape": [1, 2], "datatype": "FP32",
                                                           "data": [1, 2]}]}).encode(), {}, 400, "datatype"),
    ("string-data", "{f}/infer", _v2(data=["a", 2, 3, 4]), {}, 400, "must be a number"),
    ("wrong-shape", "{f}/infer", _v2(shape=[1, 3], data=[1, 2, 3]), {}, 400, "does not match"),
    ("data-underfills-shape", "{f}/infer", _v2(data=[1, 2, 3]), {}, 400, "needs a flat list of 4"),
    ("negative-shape", "{f}/infer", _v2(shape=[-1, 4]), {}, 400, "negative"),
    ("too-many-values", "{f}/infer", _v2(shape=[3, 4], data=[1] * 12), {}, 400, "too many values"),
    ("huge-declared-shape", "{f}/infer", _v2(shape=[1_000_000_000, 4]), {}, 400, "too many values"),
    ("bad-timeout", "{f}/infer", b'{"inputs": [' + _v2()[12:-2] + b'], "parameters": {"timeout": -5}}', {}, 400,
     "parameters.timeout"),
    ("sequence-id", "{f}/infer", b'{"inputs": [' + _v2()[12:-2] + b'], "parameters": {"sequence_id": 3}}', {}, 400,
     "sequence"),
    ("unknown-output", "{f}/infer", b'{"inputs": [' + _v2()[12:-2] + b'], "outputs": [{"name": "z"}]}', {}, 400,
     "unknown output"),
    ("header-length-not-a-number", "{f}/infer", _BINARY_HEADER + bytes(16),
     {"Inference-Header-Content-Length": "abc"}, 400, "Inference-Header-Content-Length"),
    ("header-length-past-body", "{f}/infer", _BINARY_HEADER + bytes(16),
     {"Inference-Header-Content-Length": "9999"}, 400, "Inference-Header-Content-Length"),
    ("binary-too-short", "{f}/infer", _BINARY_HEADER + bytes(12), _FRAMED, 400, "binary_data_size"),
    ("binary-too-long", "{f}/infer", _BINARY_HEADER + bytes(20), _FRAMED, 400, "binary_data_size"),
    ("bad-gzip", "{f}/infer", b"not gzip", {"Content-Encoding": "gzip"}, 400, "gzip"),
    ("gzip-bomb", "{f}/infer", gzip.compress(b'{"inputs": [' + b" " * 100_000 + b"]}"), {"Content-Encoding": "gzip"},
     400, "decompressed"),
    ("body-too-large", "{f}/infer", _v2(data=[1.0] * 200), {}, 413, ""),
    ("unknown-model", "nope-{f}/infer", _v2(), {}, 404, "not found"),
    ("unknown-version", "{f}@9/infer", _v2(), {}, 404, "no version 9"),
    ("unknown-version-route", "{f}/versions/9/infer", _v2(), {}, 404, "no version 9"),
    ("non-numeric-version-route", "{f}/versions/x/infer", _v2(), {}, 404, "no version"),
    ("unknown-alias", "{f}@staging/infer", _v2(), {}, 404, "no alias 'staging'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [c if hasattr(c, "marks") else pytest.param(*c[1:], id=c[0]) for c in V2_CASES],
)
async def test_bad_v2_request_is_an_error_and_nothing_is_enqueued(
    world: BadInputWorld, path: str, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    response = await world.http.post(
        f"/v2/models/{path.format(f=world.floats, i=world.ints)}",
        content=body,
        headers={"Content-Type": "application/json", "Prefer": "respond-async", **headers},
    )
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert isinstance(error, str)
    assert error
    assert message in error
    assert await world.backlog() == dict.fromkeys((v.key for v in world.versions), 0)
    assert world.api.proc.alive()


async def test_a_chunked_body_over_the_cap_is_413_and_nothing_is_enqueued(world: BadInputWorld) -> None:
    """No Content-Length to check up front: the cap holds while the body streams in."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"inputs": [['
        for _ in range(400):
            yield b"1, "
        yield b"1]]}"

    response = await world.http.post(
        f"/v1/models/{world.floats}/predict", content=chunks(),
        headers={"Content-Type": "application/json", "Prefer": "respond-async"},
    )  # fmt: skip
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    assert await world.backlog() == dict.fromkeys((v.key for v in world.versions), 0)


async def test_after_the_bad_tables_a_good_request_is_enqueued_and_nothing_else(world: BadInputWorld) -> None:
    """Runs after the tables (file order): the XLEN checks above could see an enqueue."""
    response = await world.http.post(
        f"/v1/models/{world.floats}/predict", content=GOOD,
        headers={"Content-Type": "application/json", "Prefer": "respond-async"},
    )  # fmt: skip
    assert response.status_code == 202, response.text
    backlog = await world.backlog()
    # the bare name is the default alias: version 1 (version 2 was registered under "prod" only)
    assert backlog == {world.versions[0].key: 1, world.versions[1].key: 0, world.versions[2].key: 0}
