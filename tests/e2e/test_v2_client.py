"""A stock ``tritonclient.http`` client, unchanged, against ``inferq serve`` + ``inferq worker`` processes: the API
key goes in each call's ``headers`` (tritonclient's own parameter), the server routes need none."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from inferq.cli.demo import build as build_demo
from inferq.engine import Runner, read_signature
from inferq.engine.convert import convert_sklearn
from inferq.settings import Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.migrate import upgrade
from inferq.store.registry import Registry

from .apikeys import auth_env, bearer, make_key
from .ports import free_port

httpclient = pytest.importorskip("tritonclient.http")
triton_utils = pytest.importorskip("tritonclient.utils")

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


def string_label_iris() -> bytes:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data.astype(np.float32), data.target_names[data.target])
    return convert_sklearn(model, n_features=4)


@dataclass
class Stack:
    url: str
    model: str
    onnx: dict[int, bytes]
    key: str  # scope predict
    jobs_key: str  # scope jobs only: no V2 model route takes it


@pytest.fixture
async def stack(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    """``iris`` v1 (int labels) and v2 (string labels) registered; one API and one worker process serving them."""
    assert settings.services.database_url
    await upgrade(settings.services.database_url)
    engine = create_engine(settings.services.database_url)
    name, onnx = f"triton-{secrets.token_hex(4)}", {1: build_demo("iris", 1).onnx, 2: string_label_iris()}
    try:
        registry = Registry(create_sessionmaker(engine))
        for model in onnx.values():
            await registry.register(name=name, model=model, signature=read_signature(model))
    finally:
        await engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(
        INFERQ_DATABASE_URL=settings.services.database_url,
        INFERQ_REDIS_URL=settings.services.redis_url or "",
        INFERQ_KEY_PREFIX=settings.services.key_prefix,
        **auth_env(settings),
    )
    key, jobs_key = await make_key(settings, "predict"), await make_key(settings, "jobs")
    port = free_port()
    commands = {
        "serve": [sys.executable, "-m", "inferq", "serve", "--port", str(port)],
        "worker": [sys.executable, "-m", "inferq", "worker", "--models", f"{name}@1,{name}@2"],
    }
    procs: list[asyncio.subprocess.Process] = []
    for label, command in commands.items():
        with (tmp_path / f"{label}.log").open("wb") as sink:
            procs.append(
                await asyncio.create_subprocess_exec(*command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
            )
    url = f"127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=f"http://{url}", timeout=10, headers=bearer(key)) as client:
            for _ in range(600):  # the API answers, and both versions have a live consumer
                try:
                    ready = [await client.get(f"/v2/models/{name}/versions/{v}/ready") for v in (1, 2)]
                    if all(r.status_code == 200 for r in ready):
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
                raise AssertionError(f"the API and worker did not get ready: {logs}")
        yield Stack(url=url, model=name, onnx=onnx, key=key, jobs_key=jobs_key)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def client_session(url: str, model: str, key: str, jobs_key: str) -> dict[str, Any]:
    """What a user's script does with the stock client (run in a thread: the client blocks). The server's own
    routes (/v2, /v2/health/*) are called without a key; every model route with ``headers=auth()``."""
    client = httpclient.InferenceServerClient(url=url)

    def auth() -> dict[str, str]:
        # NOTE: a fresh dict per call: tritonclient's infer() writes into the dict it is given (Content-Encoding,
        # Inference-Header-Content-Length), and a stale length sent with the next request truncates its JSON.
        return bearer(key)

    seen: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model, headers=auth()),
        "v2_ready": client.is_model_ready(model, model_version="2", headers=auth()),
        "server": client.get_server_metadata(),
        "metadata": client.get_model_metadata(model, headers=auth()),
        "metadata_v2": client.get_model_metadata(model, model_version="2", headers=auth()),
        "model_ready_without_key": client.is_model_ready(model),
    }
    binary = httpclient.InferInput("input", list(ROWS.shape), "FP32")
    binary.set_data_from_numpy(ROWS)  # binary_data=True: the default
    outputs = [
        httpclient.InferRequestedOutput("label"),  # binary_data=True: the default
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
    ]
    result = client.infer(model, [binary], outputs=outputs, request_id="r-1", headers=auth())
    seen["binary"] = {name: result.as_numpy(name) for name in ("label", "probabilities")}
    seen["binary_response"] = result.get_response()
    as_json = httpclient.InferInput("input", list(ROWS.shape), "FP32")
    as_json.set_data_from_numpy(ROWS, binary_data=False)
    result = client.infer(  # no outputs listed
        model, [as_json], model_version="2", priority=1, timeout=5_000_000, headers=auth()
    )
    seen["json"] = {name: result.as_numpy(name) for name in ("label", "probabilities")}
    seen["json_response"] = result.get_response()
    compressed = client.infer(model, [binary], request_compression_algorithm="gzip", headers=auth())
    seen["gzip"] = compressed.as_numpy("label")
    errors = {}
    wrong = httpclient.InferInput("input", list(ROWS.shape), "FP64")
    wrong.set_data_from_numpy(ROWS.astype(np.float64))
    for case, call in {
        "datatype": lambda: client.infer(model, [wrong], headers=auth()),
        "model": lambda: client.get_model_metadata(f"{model}-missing", headers=auth()),
        "output": lambda: client.infer(
            model, [binary], outputs=[httpclient.InferRequestedOutput("scores")], headers=auth()
        ),
        "no_key": lambda: client.infer(model, [binary]),
        "bad_key": lambda: client.infer(model, [binary], headers=bearer("iq_" + "0" * 16 + "_" + "0" * 48)),
        "jobs_key": lambda: client.infer(model, [binary], headers=bearer(jobs_key)),
        "metadata_without_key": lambda: client.get_model_metadata(model),
    }.items():
        try:
            call()
        except triton_utils.InferenceServerException as exc:
            errors[case] = (exc.status(), exc.message())
    seen["errors"] = errors
    client.close()
    return seen


async def test_the_stock_triton_http_client_works_unchanged(stack: Stack, settings: Settings) -> None:
    seen = await asyncio.to_thread(client_session, stack.url, stack.model, stack.key, stack.jobs_key)
    assert (seen["live"], seen["ready"], seen["model_ready"], seen["v2_ready"]) == (True, True, True, True)
    assert seen["model_ready_without_key"] is False  # the stock client's answer to a 401
    assert seen["server"]["name"] == "inferq"
    assert "binary_tensor_data" in seen["server"]["extensions"]
    assert seen["metadata"]["platform"] == "onnxruntime_onnx"
    assert seen["metadata"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert seen["metadata_v2"]["outputs"][0] == {"name": "label", "datatype": "BYTES", "shape": [-1]}

    v1 = Runner.load(stack.onnx[1], settings=settings.engine).run({"input": ROWS})
    v2 = Runner.load(stack.onnx[2], settings=settings.engine).run({"input": ROWS})
    assert np.array_equal(seen["binary"]["label"], v1["label"])
    assert np.array_equal(seen["binary"]["probabilities"], v1["probabilities"])  # asked as JSON, reshaped by the client
    head = seen["binary_response"]
    assert (head["id"], head["model_name"], head["model_version"]) == ("r-1", stack.model, "1")
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 24}
    # No outputs listed: the client asks for binary_data_output, and BYTES labels decode to bytes.
    assert seen["json"]["label"].tolist() == [label.encode() for label in v2["label"].tolist()]
    assert np.array_equal(seen["json"]["probabilities"], v2["probabilities"])
    assert seen["json_response"]["model_version"] == "2"
    assert np.array_equal(seen["gzip"], v1["label"])  # a gzip request body (no outputs listed: all binary)

    errors = seen["errors"]
    assert errors["datatype"] == ("400", "input 'input': datatype FP64; the model takes FP32")
    assert errors["model"][0] == "404"
    assert errors["output"] == ("400", "unknown output 'scores'; this model's outputs are: label, probabilities")
    assert errors["no_key"] == ("401", "missing API key: send 'Authorization: Bearer iq_<id>_<secret>'")
    assert errors["bad_key"] == ("401", "invalid, revoked or expired API key")
    assert errors["jobs_key"][0] == "403"
    assert "'predict'" in errors["jobs_key"][1]
    assert errors["metadata_without_key"][0] == "401"
