"""``inferq worker`` as a real process tree serves ``/metrics`` on ``INFERQ_WORKER_METRICS_PORT``: its children's
counts summed, a child killed with -9 included (its counts stay), and the supervisor's own restarts."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import redis.asyncio as aioredis
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from inferq.contracts.messages import InferRequest, InferResult, message_encoder
from inferq.contracts.models import ModelVersion
from inferq.contracts.names import Names
from inferq.engine import read_signature
from inferq.inputs import encode_tensors
from inferq.settings import Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.registry import Registry
from inferq.streams.partition import Partition
from inferq.streams.results import decode_stored

from .ports import free_port


def affine_onnx() -> bytes:
    """``y = 2x + 1`` on float32 ``[None, 4]``."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
        "metrics-e2e",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        initializer=[numpy_helper.from_array(np.float32(2), "two"), numpy_helper.from_array(np.float32(1), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        INFERQ_DATABASE_URL=settings.services.database_url or "",
        INFERQ_REDIS_URL=settings.services.redis_url or "",
        INFERQ_KEY_PREFIX=settings.services.key_prefix,
        INFERQ_MODEL_ROOT=str(tmp_path / "models"),
        INFERQ_STATE_DIR=str(tmp_path / "state"),
        INFERQ_BLOCK_MS="100",
        INFERQ_RESTART_BACKOFF_MS="100",
        INFERQ_WORKER_METRICS_PORT=str(free_port()),
    )
    subprocess.run([sys.executable, "-m", "inferq", "migrate"], env=env, capture_output=True, check=True, timeout=120)
    return env


@pytest.fixture
async def version(settings: Settings, env: dict[str, str]) -> AsyncIterator[ModelVersion]:
    assert settings.services.database_url
    engine = create_engine(settings.services.database_url)
    onnx_bytes = affine_onnx()
    onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
    registry = Registry(create_sessionmaker(engine))
    yield await registry.register(
        name=f"met-{secrets.token_hex(4)}", model=onnx_bytes, signature=read_signature(onnx_bytes)
    )
    await engine.dispose()


@pytest.fixture
async def supervisor(
    env: dict[str, str], version: ModelVersion, tmp_path: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = start_worker(env, tmp_path / "worker.log", "--models", version.key, "--processes", "1")
    yield proc
    for child in children_of(proc.pid):  # a failed test must not leave a process tree behind
        os.kill(child, signal.SIGKILL)
    proc.kill()
    proc.wait()


def start_worker(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "inferq", "worker", *args], env=env, stderr=sink)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def predict(redis: aioredis.Redis, settings: Settings, version: ModelVersion) -> InferResult:
    """One request straight onto the work stream, and its stored result."""
    names = Names(settings.services.key_prefix)
    part = Partition.of(names, model=version.model, version=version.version)
    request = InferRequest(
        id=secrets.token_hex(8), tenant="default", model=version.model, version=version.version,
        inputs=encode_tensors({"x": np.ones((1, 4), np.float32)}), rows=1, ttl_ms=60_000, output="tensors",
    )  # fmt: skip
    await redis.xadd(part.work, {"m": message_encoder.encode(request)})
    stored: list[InferResult] = []

    async def done() -> bool:
        value = await redis.get(names.result(request.id))
        found = decode_stored(value) if value is not None else None
        if isinstance(found, InferResult):
            stored.append(found)
        return bool(stored)

    await eventually(done, "the result")
    return stored[0]


def scrape(port: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples}  # fmt: skip


async def test_metrics_sum_the_children_a_killed_one_included(
    settings: Settings, env: dict[str, str], version: ModelVersion, redis_client: aioredis.Redis,
    supervisor: subprocess.Popen[bytes],
) -> None:  # fmt: skip
    port, names = env["INFERQ_WORKER_METRICS_PORT"], Names(settings.services.key_prefix)
    labels = {("model", version.model), ("version", str(version.version))}
    succeeded = ("inferq_worker_results_total", frozenset({*labels, ("lane", "interactive"), ("outcome", "succeeded")}))

    async def up() -> bool:
        return bool(await redis_client.exists(names.alive(version.key)))

    await eventually(up, "the worker to come up")
    first = children_of(supervisor.pid)
    assert (await predict(redis_client, settings, version)).status == "succeeded"
    assert scrape(port)[succeeded] == 1

    os.kill(first[0], signal.SIGKILL)  # its counts are in its file; the supervisor starts another child

    async def replaced() -> bool:
        return len([c for c in children_of(supervisor.pid) if c not in first]) == 1

    await eventually(replaced, "a new child")
    assert (await predict(redis_client, settings, version)).status == "succeeded"
    seen = scrape(port)
    assert seen[succeeded] == 2  # one counted by the dead child, one by the new one
    assert seen[("inferq_worker_batch_rows_count", frozenset(labels))] == 2
    assert seen[("inferq_worker_restarts_total", frozenset())] == 1
    assert seen[("inferq_worker_processes", frozenset())] == 1

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0
    with pytest.raises(httpx.ConnectError):
        scrape(port)


async def test_a_configured_directory_is_used_and_its_old_files_dropped(
    settings: Settings, env: dict[str, str], version: ModelVersion, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"left by a process of an earlier run, and not even a valid file")
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    proc = start_worker(env, tmp_path / "worker.log", "--models", version.key, "--processes", "2")
    try:
        names = Names(settings.services.key_prefix)

        async def up() -> bool:
            return bool(await redis_client.exists(names.alive(version.key))) and len(children_of(proc.pid)) == 2

        await eventually(up, "the workers to come up")
        children = children_of(proc.pid)
        for _ in range(3):
            assert (await predict(redis_client, settings, version)).status == "succeeded"
        seen = scrape(env["INFERQ_WORKER_METRICS_PORT"])
        labels = frozenset({("model", version.model), ("version", str(version.version)), ("lane", "interactive"),
                            ("outcome", "succeeded")})  # fmt: skip
        assert seen[("inferq_worker_results_total", labels)] == 3  # however the two children shared them
        assert seen[("inferq_worker_processes", frozenset())] == 2
        files = {p.name for p in directory.glob("*.db")}
        assert "counter_1.db" not in files
        assert files <= {f"{kind}_{pid}.db" for pid in children for kind in ("counter", "histogram")}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert directory.exists()  # configured: kept (a temporary one is removed)
    finally:
        for child in children_of(proc.pid):
            os.kill(child, signal.SIGKILL)
        proc.kill()
        proc.wait()
