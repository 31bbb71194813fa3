"""Open Inference Protocol (V2) over the queue: a real worker pool, JSON and binary tensors, errors, holds."""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from apikit import Api, running, tuned
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from worker_harness import affine_model, build, running_pool, select, worker_settings

from inferq.api import begin_drain
from inferq.cli.demo import build as build_demo
from inferq.contracts.messages import request_decoder
from inferq.contracts.models import ModelVersion
from inferq.contracts.names import Names
from inferq.engine import Runner, read_signature
from inferq.engine.convert import convert_sklearn
from inferq.settings import Settings
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
HEADER = "Inference-Header-Content-Length"


@dataclass
class Served:
    """The app, and models: ``iris@1`` (int labels), ``iris@2`` (string labels) and ``echo@1`` have a
    worker; ``idle@1`` (rejections: its stream must stay empty) and ``late@1`` (timeouts) have none."""

    api: Api
    iris: str
    echo: str
    idle: str
    late: str
    onnx: dict[str, bytes]
    late_version: ModelVersion

    @property
    def client(self) -> httpx.AsyncClient:
        return self.api.client

    def stream(self, model: str, version: int = 1) -> str:
        return self.api.work_stream(model, version)

    def run(self, key: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model run directly with the engine: what the queue path must answer."""
        return Runner.load(self.onnx[key], settings=self.api.settings.engine).run(feeds)


def echo_model() -> bytes:
    """Strings and int64 pairs in, the same out: BYTES and INT64 tensors both ways."""
    from onnx import TensorProto, helper

    return build(
        [("s", TensorProto.STRING, [None]), ("n", TensorProto.INT64, [None, 2])],
        [("t", TensorProto.STRING, [None]), ("m", TensorProto.INT64, [None, 2])],
        [helper.make_node("Identity", ["s"], ["t"]), helper.make_node("Identity", ["n"], ["m"])],
    )


def string_label_iris() -> bytes:
    """Iris with the species names as its class labels (a string ``label`` output)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data.astype(np.float32), data.target_names[data.target])
    return convert_sklearn(model, n_features=4)


async def _register(registry: Registry, name: str, onnx: bytes, aliases: tuple[str, ...] = ()) -> ModelVersion:
    return await registry.register(name=name, model=onnx, signature=read_signature(onnx), aliases=aliases)


@pytest.fixture(scope="module")
async def served(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[Served]:
    """One app and one worker pool for the module, entered and left in one task of their own."""
    registry, tag = Registry(sessionmaker), secrets.token_hex(4)
    onnx = {
        "iris@1": build_demo("iris", 1).onnx,
        "iris@2": string_label_iris(),
        "echo@1": echo_model(),
        "late@1": affine_model(),
    }
    names = {key: f"v2{key.split('@')[0]}-{tag}" for key in ("iris", "echo", "idle", "late")}
    versions = [
        await _register(registry, names["iris"], onnx["iris@1"]),
        await _register(registry, names["iris"], onnx["iris@2"], aliases=("strings",)),
        await _register(registry, names["echo"], onnx["echo@1"]),
    ]
    await _register(registry, names["idle"], onnx["iris@1"])
    late = await _register(registry, names["late"], onnx["late@1"])
    ready: asyncio.Future[Served] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def serve() -> None:
        async with (
            running(tuned(settings)) as api,
            running_pool(worker_settings(settings), sessionmaker, select(*versions)),
        ):
            key_names = Names(settings.services.key_prefix)
            keys = [key_names.alive(key_names.partition(v.model, v.version)) for v in versions]
            redis = aioredis.Redis.from_url(settings.services.redis_url or "")
            for _ in range(500):
                if await redis.exists(*keys) == len(keys):
                    break
                await asyncio.sleep(0.02)
            await redis.aclose()
            ready.set_result(Served(api=api, onnx=onnx, late_version=late, **names))
            await stop.wait()

    task = asyncio.create_task(serve())
    await asyncio.wait((ready, task), timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    yield ready.result()
    stop.set()
    await task


def infer_body(rows: np.ndarray, *, name: str = "input", nested: bool = True, **extra: Any) -> dict[str, Any]:
    data = rows.tolist() if nested else rows.ravel().tolist()
    return {"inputs": [{"name": name, "shape": list(rows.shape), "datatype": "FP32", "data": data}], **extra}


def binary_request(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    """A body framed by hand per the binary tensor data extension."""
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def parse_binary(response: httpx.Response) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON header and each binary output's bytes, from a binary response."""
    length = int(response.headers[HEADER])
    header = json.loads(response.content[:length])
    blobs, offset = {}, length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs[output["name"]] = response.content[offset : offset + size]
            offset += size
    assert offset == len(response.content)
    return header, blobs


def length_prefixed(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def split_length_prefixed(raw: bytes) -> list[str]:
    values, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        values.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return values


async def test_server_metadata_and_health(served: Served) -> None:
    meta = await served.client.get("/v2")
    assert meta.status_code == 200
    assert meta.json()["name"] == "inferq"
    assert meta.json()["extensions"] == ["binary_tensor_data"]
    assert meta.json()["version"]
    live = await served.client.get("/v2/health/live")
    ready = await served.client.get("/v2/health/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


async def test_model_metadata_has_v2_datatypes_and_dynamic_dimensions(served: Served) -> None:
    iris = served.iris
    default = await served.client.get(f"/v2/models/{iris}")
    assert default.status_code == 200
    assert default.json() == {
        "name": iris,
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    for path in (f"/v2/models/{iris}/versions/2", f"/v2/models/{iris}@2", f"/v2/models/{iris}@strings"):
        strings = await served.client.get(path)
        assert strings.status_code == 200, path
        assert strings.json()["outputs"][0] == {"name": "label", "datatype": "BYTES", "shape": [-1]}
    echo = (await served.client.get(f"/v2/models/{served.echo}")).json()
    assert echo["inputs"] == [
        {"name": "s", "datatype": "BYTES", "shape": [-1]},
        {"name": "n", "datatype": "INT64", "shape": [-1, 2]},
    ]


@pytest.mark.parametrize(
    ("path", "ready"),
    [
        ("/v2/models/{iris}/ready", True),
        ("/v2/models/{iris}/versions/1/ready", True),
        ("/v2/models/{iris}/versions/2/ready", True),
        ("/v2/models/{iris}@strings/ready", True),
        ("/v2/models/{idle}/ready", False),
        ("/v2/models/{idle}/versions/1/ready", False),
    ],
)
async def test_model_ready_is_a_live_consumer(served: Served, path: str, ready: bool) -> None:
    response = await served.client.get(path.format(iris=served.iris, idle=served.idle))
    assert response.status_code == (200 if ready else 400)
    body = response.json()
    assert body["ready"] is ready
    assert ("error" in body) is not ready


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope-{tag}",
        "/v2/models/nope-{tag}/ready",
        "/v2/models/{iris}/versions/9",
        "/v2/models/{iris}/versions/abc/ready",
        "/v2/models/{iris}@nope",
        "/v2/models/{iris}@2/versions/2",
        "/v2/models/BAD NAME",
        "/v2/models/{iris}/versions/1/nothing-here",
        "/v2/nothing-here",
    ],
)
async def test_unknown_models_and_versions_are_404_with_an_error(served: Served, path: str) -> None:
    response = await served.client.get(path.format(tag=secrets.token_hex(3), iris=served.iris))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}


async def test_a_wrong_method_is_405_with_an_error(served: Served) -> None:
    response = await served.client.get(f"/v2/models/{served.iris}/infer")
    assert (response.status_code, set(response.json())) == (405, {"error"})
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
async def test_json_infer_answers_the_classifier_outputs_exactly(served: Served, nested: bool) -> None:
    body = infer_body(ROWS, nested=nested, id="req-7")
    response = await served.client.post(f"/v2/models/{served.iris}/infer", json=body)
    assert response.status_code == 200, response.text
    assert HEADER not in response.headers
    answer = response.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (served.iris, "1", "req-7")
    direct = served.run("iris@1", {"input": ROWS})
    label, probabilities = answer["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [3], "data": direct["label"].tolist()}
    assert {k: probabilities[k] for k in ("name", "datatype", "shape")} == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [3, 3],
    }
    assert np.array_equal(np.array(probabilities["data"], dtype=np.float32), direct["probabilities"].ravel())


async def test_string_labels_come_back_as_the_model_emits_them(served: Served) -> None:
    response = await served.client.post(f"/v2/models/{served.iris}/versions/2/infer", json=infer_body(ROWS))
    assert response.status_code == 200, response.text
    label = response.json()["outputs"][0]
    assert label["datatype"] == "BYTES"
    assert label["data"] == served.run("iris@2", {"input": ROWS})["label"].tolist()
    assert set(label["data"]) <= {"setosa", "versicolor", "virginica"}
    assert response.json()["model_version"] == "2"
    assert len(response.json()["id"]) == 32  # no request id: the server-made one


async def test_requested_outputs_are_exactly_those_in_that_order(served: Served) -> None:
    body = infer_body(ROWS, outputs=[{"name": "probabilities"}])
    response = await served.client.post(f"/v2/models/{served.iris}/infer", json=body)
    assert [o["name"] for o in response.json()["outputs"]] == ["probabilities"]
    both = infer_body(ROWS, outputs=[{"name": "probabilities"}, {"name": "label"}])
    response = await served.client.post(f"/v2/models/{served.iris}@1/infer", json=both)
    assert [o["name"] for o in response.json()["outputs"]] == ["probabilities", "label"]


async def test_binary_inputs_and_outputs_by_hand(served: Served) -> None:
    header = {
        "inputs": [
            {"name": "input", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": ROWS.nbytes}}
        ],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
    }
    content, headers = binary_request(header, ROWS.astype("<f4").tobytes())
    response = await served.client.post(f"/v2/models/{served.iris}/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    answer, blobs = parse_binary(response)
    direct = served.run("iris@1", {"input": ROWS})
    label, probabilities = answer["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [3], "parameters": {"binary_data_size": 24}}
    assert np.array_equal(np.frombuffer(blobs["label"], dtype="<i8"), direct["label"])
    assert "parameters" not in probabilities  # JSON, as asked (no binary_data)
    assert np.array_equal(np.array(probabilities["data"], dtype=np.float32), direct["probabilities"].ravel())


async def test_binary_data_output_makes_every_output_binary(served: Served) -> None:
    body = infer_body(ROWS, parameters={"binary_data_output": True})
    response = await served.client.post(f"/v2/models/{served.iris}/infer", json=body)
    answer, blobs = parse_binary(response)
    direct = served.run("iris@1", {"input": ROWS})
    assert set(blobs) == {"label", "probabilities"}
    assert all("data" not in o for o in answer["outputs"])
    assert np.array_equal(np.frombuffer(blobs["probabilities"], dtype="<f4").reshape(3, 3), direct["probabilities"])


async def test_bytes_tensors_binary_and_json_both_ways(served: Served) -> None:
    words = ["a", "héllo", ""]
    pairs = np.array([[1, 2], [3, -4], [2**40, 0]], dtype=np.int64)
    sized = {"binary_data_size": len(length_prefixed(words))}
    header = {
        "inputs": [
            {"name": "s", "shape": [3], "datatype": "BYTES", "parameters": sized},
            {"name": "n", "shape": [3, 2], "datatype": "INT64", "data": pairs.tolist()},
        ],
        "outputs": [
            {"name": "t", "parameters": {"binary_data": True}},
            {"name": "m", "parameters": {"binary_data": False}},
        ],
    }
    content, headers = binary_request(header, length_prefixed(words))
    response = await served.client.post(f"/v2/models/{served.echo}/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    answer, blobs = parse_binary(response)
    assert split_length_prefixed(blobs["t"]) == words
    assert answer["outputs"][1] == {"name": "m", "datatype": "INT64", "shape": [3, 2], "data": pairs.ravel().tolist()}
    plain = {"inputs": [{**header["inputs"][0], "data": words, "parameters": {}}, header["inputs"][1]]}
    response = await served.client.post(f"/v2/models/{served.echo}/infer", json=plain)
    assert response.json()["outputs"][0] == {"name": "t", "datatype": "BYTES", "shape": [3], "data": words}


async def test_gzip_request_bodies_are_read(served: Served) -> None:
    content = gzip.compress(json.dumps(infer_body(ROWS)).encode())
    response = await served.client.post(
        f"/v2/models/{served.iris}/infer", content=content, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == served.run("iris@1", {"input": ROWS})["label"].tolist()


def _bad(rows: np.ndarray = ROWS, **change: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist(), **change}
    return {"inputs": [tensor]}


_RAW = ROWS.astype("<f4").tobytes()
_SIZED = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": 48}}]}
BAD_REQUESTS: dict[str, tuple[Any, dict[str, str], str]] = {
    # name: (json body or raw bytes, headers, a phrase the error must contain)
    "wrong datatype": (_bad(datatype="FP64"), {}, "datatype FP64; the model takes FP32"),
    "unknown datatype": (_bad(datatype="FLOAT32"), {}, "unknown datatype 'FLOAT32'"),
    "wrong shape": (_bad(shape=[4, 3]), {}, "shape [4, 3] does not match the model's [-1, 4]"),
    "wrong rank": (_bad(shape=[12]), {}, "shape [12] does not match"),
    "data does not fill the shape": (_bad(shape=[2, 4]), {}, "nested data does not match shape [2, 4]"),
    "flat data too short": (_bad(data=[1.0, 2.0]), {}, "needs a flat list of 12 values, got 2"),
    "string in FP32 data": (_bad(data=[[1.0, "x", 3.0, 4.0]] * 3), {}, "must be a number"),
    "unknown input": (_bad(name="x"), {}, "unknown input 'x'; this model's inputs are: input"),
    "missing input": ({"inputs": []}, {}, "missing input 'input'"),
    "input twice": ({"inputs": _bad()["inputs"] * 2}, {}, "appears twice"),
    "no data": (_bad(data=None), {}, "neither data nor binary_data_size"),
    "unknown output": ({**_bad(), "outputs": [{"name": "scores"}]}, {}, "unknown output 'scores'"),
    "classification": (
        {**_bad(), "outputs": [{"name": "label", "parameters": {"classification": 2}}]},
        {},
        "the classification extension is not supported",
    ),
    "unknown field": ({**_bad(), "inptus": []}, {}, "unknown field"),
    "not json": (b"{nope", {}, "not valid JSON"),
    "negative timeout": ({**_bad(), "parameters": {"timeout": -5}}, {}, "parameters.timeout"),
    "bad priority": ({**_bad(), "parameters": {"priority": "high"}}, {}, "parameters.priority"),
    "binary size too small": (
        (json.dumps(_SIZED).replace("48", "40").encode(), _RAW[:40]),
        {},
        "binary_data_size is 40 bytes, but shape [3, 4] of FP32 is 48",
    ),
    "binary size past the end": ((json.dumps(_SIZED).encode(), _RAW[:47]), {}, "runs past the end of the body"),
    "extra binary bytes": ((json.dumps(_SIZED).encode(), _RAW + b"\0"), {}, "add up to 48"),
    "binary size without header": (json.dumps(_SIZED).encode(), {}, "no Inference-Header-Content-Length"),
    "binary data without header": (json.dumps(_SIZED).encode() + _RAW, {}, "needs the Inference-Header-Content-Length"),
    "header length not a number": (b"{}", {HEADER: "ten"}, "must be the JSON header's length"),
    "header length zero": (b"{}", {HEADER: "0"}, "is 0, but the body has 2 bytes"),
    "header length past the body": (b"{}", {HEADER: "99"}, "is 99, but the body has 2 bytes"),
    "header length cuts the JSON": ((json.dumps(_SIZED).encode(), _RAW), {"cut": "1"}, "not valid JSON"),
    "bad gzip": (b"not gzip", {"Content-Encoding": "gzip"}, "cannot be decompressed"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_bad_requests_are_400_with_an_error_and_nothing_enqueued(
    served: Served, redis_client: aioredis.Redis, case: str
) -> None:
    body, headers, phrase = BAD_REQUESTS[case]
    headers = dict(headers)
    if isinstance(body, tuple):  # (JSON header, binary data): framed with the header length
        head, raw = body
        cut = int(headers.pop("cut", "0"))
        headers[HEADER] = str(len(head) - cut)
        body = head + raw
    request = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = await served.client.post(f"/v2/models/{served.idle}/infer", headers=headers, **request)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    (message,) = response.json().values()
    assert phrase in response.json()["error"], message
    assert await redis_client.xlen(served.stream(served.idle)) == 0


async def test_unknown_model_or_version_is_404_and_nothing_enqueued(
    served: Served, redis_client: aioredis.Redis
) -> None:
    for path in (f"/v2/models/nope-{served.idle}/infer", f"/v2/models/{served.idle}/versions/2/infer"):
        response = await served.client.post(path, json=_bad())
        assert response.status_code == 404
        assert set(response.json()) == {"error"}
    assert await redis_client.xlen(served.stream(served.idle)) == 0


async def test_timeout_without_a_worker_is_504_at_the_deadline(served: Served, redis_client: aioredis.Redis) -> None:
    x = np.ones((2, 4), dtype=np.float32)
    body = {
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.tolist()}],
        "outputs": [{"name": "y"}],
        "parameters": {"timeout": 300_000, "priority": 2},
    }
    started = time.monotonic()
    response = await served.client.post(f"/v2/models/{served.late}/infer", json=body)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert set(response.json()) == {"error"}
    assert elapsed < served.api.settings.queue.wait_default_s  # answered at the deadline, not the wait's end
    (entry,) = await redis_client.xrange(served.stream(served.late), count=10)
    message = request_decoder.decode(entry[1][b"m"])
    assert (message.ttl_ms, message.priority, message.output, message.output_names) == (300, 2, "tensors", ("y",))
    assert await redis_client.exists(served.api.result_key(message.id)) == 0  # no placeholder: nobody polls
    await redis_client.delete(served.stream(served.late))


async def test_no_timeout_is_held_to_the_wait_then_504_never_202(served: Served, redis_client: aioredis.Redis) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]}
    response = await served.client.post(f"/v2/models/{served.late}/infer", json=body, headers={"Prefer": "wait=0.3"})
    assert response.status_code == 504
    assert "no result within 0.3s" in response.json()["error"]
    (entry,) = await redis_client.xrange(served.stream(served.late), count=10)
    assert request_decoder.decode(entry[1][b"m"]).ttl_ms == 300  # the deadline never outlives the hold
    await redis_client.delete(served.stream(served.late))


async def test_respond_async_is_202_with_location_then_the_response(
    served: Served, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis_client: aioredis.Redis
) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.tolist()}], "id": "async-1"}
    response = await served.client.post(
        f"/v2/models/{served.late}/infer", json=body, headers={"Prefer": "respond-async"}
    )
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "respond-async"
    accepted = response.json()
    assert response.headers["Location"] == f"/v2/predictions/{accepted['id']}"
    assert accepted == {"id": accepted["id"], "status": "queued", "model_name": served.late, "model_version": "1"}
    queued = await served.client.get(response.headers["Location"])
    assert (queued.status_code, queued.json()["status"]) == (202, "queued")
    async with running_pool(worker_settings(settings), sessionmaker, select(served.late_version)):
        for _ in range(250):
            polled = await served.client.get(response.headers["Location"])
            if polled.status_code != 202:
                break
            await asyncio.sleep(0.02)
    assert polled.status_code == 200, polled.text
    assert polled.json()["id"] == accepted["id"]
    (y,) = polled.json()["outputs"]
    assert y["shape"] == [2, 4]
    assert np.array_equal(np.array(y["data"], dtype=np.float32), served.run("late@1", {"x": x})["y"].ravel())
    v1 = await served.client.get(f"/v1/predictions/{accepted['id']}")
    assert v1.json()["status"] == "succeeded"
    await redis_client.delete(served.stream(served.late))


async def test_respond_async_without_a_worker_polls_as_queued(served: Served, redis_client: aioredis.Redis) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]}
    response = await served.client.post(
        f"/v2/models/{served.late}/infer", json=body, headers={"Prefer": "respond-async"}
    )
    assert response.status_code == 202
    polled = await served.client.get(response.headers["Location"])
    assert (polled.status_code, polled.json()["status"]) == (202, "queued")
    missing = await served.client.get(f"/v2/predictions/{secrets.token_hex(16)}")
    assert (missing.status_code, set(missing.json())) == (404, {"error"})
    await redis_client.delete(served.stream(served.late))


async def test_a_full_partition_is_503_with_retry_after(
    served: Served, sessionmaker: async_sessionmaker[AsyncSession], redis_client: aioredis.Redis
) -> None:
    name = f"v2full-{secrets.token_hex(4)}"
    onnx = build_demo("iris", 1).onnx
    await Registry(sessionmaker).register(
        name=name, model=onnx, signature=read_signature(onnx), overrides={"admission_limit": 0}
    )
    response = await served.client.post(f"/v2/models/{name}/infer", json=infer_body(ROWS))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert set(response.json()) == {"error"}
    assert await redis_client.xlen(served.stream(name)) == 0


async def test_a_body_over_the_limit_is_413_with_an_error(settings: Settings, redis_client: aioredis.Redis) -> None:
    async with running(tuned(settings, api__max_body_bytes=1000)) as api:
        response = await api.client.post("/v2/models/any/infer", content=b"{" + b" " * 2000 + b"}")
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}


async def test_draining_answers_a_held_v2_call_503_not_202(
    served: Served, settings: Settings, redis_client: aioredis.Redis
) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]}
    async with running(tuned(settings)) as api:
        held = asyncio.create_task(api.client.post(f"/v2/models/{served.late}/infer", json=body))
        for _ in range(200):
            if await redis_client.xlen(served.stream(served.late)) == 1:
                break
            await asyncio.sleep(0.01)
        begin_drain(api.app)
        response = await asyncio.wait_for(held, timeout=5)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "shutting down" in response.json()["error"]
    await redis_client.delete(served.stream(served.late))
