"""``inferq jobs submit FILE --wait`` against real ``inferq serve`` and ``inferq worker`` processes."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferq.cli.demo import build
from inferq.engine import read_signature
from inferq.settings import Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.migrate import upgrade
from inferq.store.registry import Registry

from .ports import free_port


@pytest.fixture
async def model(settings: Settings) -> str:
    assert settings.services.database_url
    await upgrade(settings.services.database_url)
    engine = create_engine(settings.services.database_url)
    onnx, name = build("iris", 1).onnx, f"jobs-cli-{secrets.token_hex(4)}"
    try:
        await Registry(create_sessionmaker(engine)).register(name=name, model=onnx, signature=read_signature(onnx))
    finally:
        await engine.dispose()
    return f"{name}@1"


@contextlib.contextmanager
def processes(env: dict[str, str], commands: list[list[str]], logs: Path) -> Iterator[None]:
    procs = []
    for i, command in enumerate(commands):
        with (logs / f"proc-{i}.log").open("wb") as sink:
            procs.append(
                subprocess.Popen([sys.executable, "-m", "inferq", *command], env=env, stdout=sink, stderr=sink)
            )
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_submit_a_file_and_wait_for_the_job(settings: Settings, model: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(
        INFERQ_DATABASE_URL=settings.services.database_url or "",
        INFERQ_REDIS_URL=settings.services.redis_url or "",
        INFERQ_KEY_PREFIX=settings.services.key_prefix,
        INFERQ_MODEL_ROOT=str(tmp_path / "models"),
        INFERQ_CHUNK_ROWS="64",
    )
    rows = tmp_path / "rows.jsonl"
    lines = [json.dumps({"custom_id": f"r{i}", "inputs": [5.1, 3.5, 1.4, 0.2 + i / 1000]}) for i in range(300)]
    lines[10] = "not json"
    rows.write_text("\n".join(lines) + "\n")
    base = f"http://127.0.0.1:{port}"
    with processes(env, [["serve", "--port", str(port)], ["worker", "--models", model]], tmp_path):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                info = httpx.get(f"{base}/v1/models/{model.partition('@')[0]}", timeout=2).json()
                if info.get("ready"):
                    break
            time.sleep(0.2)
        submit = [sys.executable, "-m", "inferq", "jobs", "submit"]
        options = ["--model", model, "--url", base, "--idempotency-key", "cli-test"]
        done = run([*submit, str(rows), *options, "--wait"], env)
        again = run([*submit, str(rows), *options], env)
        missing = run([*submit, str(tmp_path / "nope.jsonl"), *options], env)

    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded"
    assert job["counts"] == {"total": 300, "succeeded": 299, "failed": 1}
    assert "300/300 rows (1 failed)" in done.stderr
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == job["id"]  # same key, same file: the same job
    assert missing.returncode == 2
    assert json.loads(missing.stderr)["error"]["code"] == "malformed_request"
