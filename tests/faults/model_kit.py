"""Helpers for the model-management fault tests: models (affine versions, a batch-sized memory bomb; the CPU
bomb is the upload tests' own), the admin routes
over HTTP, ``inferq worker --all``, and what the API's process tree and the partitions' alive keys say."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .harness import Api, Proc, Stack, children_of, eventually
from .models import build

MB = 1024 * 1024
ROW = [1.0, 2.0, 3.0, 4.0]
VALIDATOR = "inferq.engine.validate"


def affine(scale: float) -> bytes:
    """``y = scale·x + 1`` on float32 ``[None, 4]``: each scale its own artifact, its version told by its outputs."""
    return build(
        [("x", TensorProto.FLOAT, [None, 4])],
        [("y", TensorProto.FLOAT, [None, 4])],
        [helper.make_node("Mul", ["x", "k"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
        [
            numpy_helper.from_array(np.array(scale, np.float32), "k"),
            numpy_helper.from_array(np.array(1, np.float32), "one"),
        ],
    )


def expected(scale: float, row: Sequence[float] = ROW) -> list[float]:
    return [scale * v + 1 for v in row]


def memory_bomb(floats: int = 600_000_000) -> bytes:
    """A few hundred bytes; its warm-up run asks for ``4·floats·batch`` bytes: ``ConstantOfShape`` of a shape
    computed from the input's batch size (so ONNX Runtime cannot fold it when the session is built)."""
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("Shape", ["x"], ["batch"], start=0, end=1),
        helper.make_node("Mul", ["batch", "n"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=fill),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ]
    return build(
        [("x", TensorProto.FLOAT, [None, 4])],
        [("y", TensorProto.FLOAT, [None, 4])],
        nodes,
        [numpy_helper.from_array(np.array([floats], np.int64), "n")],
    )


# -- the admin routes -------------------------------------------------------------------------------


async def upload(http: httpx.AsyncClient, name: str, model: bytes, **fields: str) -> httpx.Response:
    """``POST /v1/models/{name}/versions``: the text fields, then the ``file`` part."""
    files = {"file": ("model.onnx", model, "application/octet-stream")}
    return await http.post(f"/v1/models/{name}/versions", data=fields, files=files)


async def put_alias(http: httpx.AsyncClient, name: str, alias: str, **body: Any) -> httpx.Response:
    """``PUT /v1/models/{name}/aliases/{alias}`` (weights given as ``{version: percent}``)."""
    if "weights" in body:
        body["weights"] = {str(v): w for v, w in body["weights"].items()}
    return await http.put(f"/v1/models/{name}/aliases/{alias}", json=body)


def problem(response: httpx.Response) -> tuple[int, str]:
    """(status, problem ``code``) of a refusal (``""`` when the body is not a problem)."""
    try:
        return response.status_code, str(response.json().get("code", ""))
    except ValueError:
        return response.status_code, ""


# -- predictions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One prediction call as its caller saw it."""

    status: int
    id: str
    version: int  # X-Model-Version
    body: dict[str, Any]
    fallback_header: str | None

    @property
    def fallback(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.body.get("fallback")
        return found

    def outputs(self) -> list[float]:
        return [float(v) for v in self.body["predictions"][0]["outputs"]["y"]]


async def predict(http: httpx.AsyncClient, ref: str, *, wait_s: float, key: str | None = None) -> Call:
    headers = {"Prefer": f"wait={wait_s:g}"}
    if key is not None:
        headers["X-Routing-Key"] = key
    response = await http.post(f"/v1/models/{ref}/predict", json={"inputs": [ROW]}, headers=headers)
    body = response.json()
    version = int(response.headers.get("X-Model-Version", "0"))
    return Call(response.status_code, body.get("id", ""), version, body, response.headers.get("X-Model-Fallback"))


async def routed(http: httpx.AsyncClient, ref: str, n: int) -> list[Call]:
    """``n`` calls answered at once (``Prefer: wait=0``: a 202 naming the version the alias chose)."""
    return list(await asyncio.gather(*(predict(http, ref, wait_s=0) for _ in range(n))))


async def finished(http: httpx.AsyncClient, ids: Sequence[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Poll ``GET /v1/predictions/{id}`` until every one has finished; their last bodies."""
    last: dict[str, dict[str, Any]] = {}

    async def done() -> bool:
        for request_id in ids:
            if last.get(request_id, {}).get("status") in ("succeeded", "failed", "expired", "cancelled"):
                continue
            response = await http.get(f"/v1/predictions/{request_id}")
            assert response.status_code == 200, f"{request_id}: {response.status_code} {response.text}"
            last[request_id] = response.json()
        return all(last[i]["status"] in ("succeeded", "failed", "expired", "cancelled") for i in ids)

    await eventually(done, timeout_s, f"{len(ids)} predictions to finish")
    return last


# -- processes -----------------------------------------------------------------------------------------


def worker_all(stack: Stack, **env: object) -> Proc:
    """``inferq worker --all``: every unarchived version, re-discovered from the registry."""
    return stack.spawn("worker", ["worker", "--all", "--processes", "1"], stack.env(**env))


async def alive(stack: Stack, name: str, version: int) -> bool:
    """Some worker consumes ``name@version`` now (its alive key is set)."""
    return bool(await stack.client().exists(stack.names.alive(stack.names.partition(name, version))))


async def wait_alive(stack: Stack, worker: Proc, name: str, versions: Sequence[int], timeout_s: float) -> float:
    async def up() -> bool:
        if not worker.alive():
            raise AssertionError(f"worker exited {worker.popen.returncode}:\n{worker.tail()}")
        return all([await alive(stack, name, v) for v in versions])

    return await eventually(up, timeout_s, f"a worker to consume {name}@{versions}")


async def apis_ready(stack: Stack, *apis: Api) -> None:
    for api in apis:
        await stack.api_ready(api)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc, like the harness: psutil is not a dependency of ours)."""
    found, pending = [], children_of(pid)
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children_of(child))
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def validators(api: Api) -> list[int]:
    """The validator children the API process runs now."""
    return [pid for pid in descendants(api.proc.pid) if VALIDATOR in cmdline(pid)]


def processes_under(path: Path) -> list[str]:
    """Every process on the machine whose command line names a file under ``path`` (an orphaned validator
    would: its argv holds the spooled upload)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and str(path) in (line := cmdline(int(entry.name))):
            found.append(f"{entry.name}: {line}")
    return found
