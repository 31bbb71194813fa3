"""``inferq worker`` as a real process tree: SIGTERM drains and acks; the supervisor restarts a killed child."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from worker_harness import (
    affine_model,
    enqueue,
    ledger_lines,
    make_request,
    partition,
    register,
    slow_model,
    stream_state,
    wait_for,
    wait_results,
)

from inferq.contracts.names import Names
from inferq.settings import Settings
from inferq.store.registry import Registry


@pytest.fixture
def worker_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(
        INFERQ_DATABASE_URL=settings.services.database_url or "",
        INFERQ_REDIS_URL=settings.services.redis_url or "",
        INFERQ_KEY_PREFIX=settings.services.key_prefix,
        INFERQ_MODEL_ROOT=str(tmp_path / "models"),
        INFERQ_STATE_DIR=str(tmp_path / "state"),
        INFERQ_RUN_LEDGER=str(tmp_path / "ledger.jsonl"),
        INFERQ_BLOCK_MS="100",
        INFERQ_RESTART_BACKOFF_MS="100",
        INFERQ_LOG_LEVEL="debug",
    )
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / "worker.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "inferq", "worker", *args], env=worker_env, stderr=log)
        started.append(proc)
        return proc

    yield start
    for proc in started:  # a failed test must not leave a process tree behind
        for child in children_of(proc.pid):
            os.kill(child, signal.SIGKILL)
        proc.kill()
        proc.wait()


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


async def child_of(pid: int, *, other_than: int = 0, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = [c for c in children_of(pid) if c != other_than]
        if children:
            return children[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no child of {pid} appeared")


async def exit_code(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("the worker did not exit")
        await asyncio.sleep(0.05)
    return proc.returncode


async def test_sigterm_finishes_and_acks_what_was_read_then_exits_zero(
    settings: Settings, registry: Registry, redis_client: aioredis.Redis, start_worker: object, tmp_path: Path
) -> None:
    version = await register(registry, slow_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    in_flight = make_request(version, {"x": np.ones((256, 1024), np.float32)})  # a run of ~0.6 s
    later = [make_request(version, {"x": np.ones((1, 1024), np.float32)}) for _ in range(3)]
    proc = start_worker("--models", version.key)  # type: ignore[operator]
    await wait_for(lambda: _exists(redis_client, part.alive_key), timeout_s=30, what="the worker to come up")

    await enqueue(redis_client, part, [in_flight])
    await wait_for(lambda: _has_lines(ledger), what="the batch to start")
    proc.send_signal(signal.SIGTERM)  # while the batch runs
    await asyncio.sleep(0.1)
    await enqueue(redis_client, part, later)  # arrives after the stop: never read

    assert await exit_code(proc) == 0
    assert [line["id"] for line in ledger_lines(ledger)] == [in_flight.id]
    results = await wait_results(redis_client, settings, [in_flight.id], timeout_s=1)
    assert results[in_flight.id].status == "succeeded"
    names = Names(settings.services.key_prefix)
    assert await redis_client.exists(*(names.result(r.id) for r in later)) == 0
    # The in-flight batch was acked (nothing pending); the rest waits in the stream for the next worker.
    assert await stream_state(redis_client, part) == (len(later), 0, 0)


async def test_supervisor_restarts_a_killed_worker_process(
    settings: Settings, registry: Registry, redis_client: aioredis.Redis, start_worker: object, tmp_path: Path
) -> None:
    version = await register(registry, affine_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    supervisor = start_worker("--models", version.key, "--processes", "1")  # type: ignore[operator]
    first = await child_of(supervisor.pid)
    await wait_for(lambda: _exists(redis_client, part.alive_key), timeout_s=30, what="the worker to come up")
    before = make_request(version, {"x": np.ones((1, 4), np.float32)})
    await enqueue(redis_client, part, [before])
    await wait_results(redis_client, settings, [before.id])

    os.kill(first, signal.SIGKILL)
    second = await child_of(supervisor.pid, other_than=first)
    after = make_request(version, {"x": np.ones((1, 4), np.float32)})
    await enqueue(redis_client, part, [after])
    results = await wait_results(redis_client, settings, [after.id], timeout_s=30)

    assert results[after.id].status == "succeeded"
    assert {line["id"]: line["pid"] for line in ledger_lines(ledger)} == {before.id: first, after.id: second}
    supervisor.send_signal(signal.SIGTERM)
    assert await exit_code(supervisor) == 0
    assert children_of(supervisor.pid) == []


async def _exists(redis: aioredis.Redis, key: str) -> bool:
    return bool(await redis.exists(key))


async def _has_lines(path: Path) -> bool:
    return bool(ledger_lines(path))


def test_unknown_model_is_refused_before_any_process_starts(worker_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "inferq", "worker", "--models", "no-such-model@1"],
        env=worker_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert '"code":"invalid_input"' in proc.stderr
    assert "no-such-model@1" in proc.stderr.strip().splitlines()[-1]
    assert "worker.started" not in proc.stderr
