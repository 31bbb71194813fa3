"""``inferq jobs submit FILE --wait`` against real ``inferq serve`` and ``inferq worker`` processes, with an API key
from ``INFERQ_API_KEY`` or ``--key``."""

from __future__ import annotations

import asyncio
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

from .apikeys import auth_env, bearer, make_key
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


async def keys(settings: Settings) -> tuple[str, str, str]:
    """Keys with the ``jobs`` scope (tenant ``default``, and another tenant's), and one with ``predict`` only."""
    return (
        await make_key(settings, "jobs"),
        await make_key(settings, "jobs", tenant="jobs-cli-b"),
        await make_key(settings, "predict"),
    )


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
        **auth_env(settings),
    )
    key, other_tenant, predict_only = asyncio.run(keys(settings))
    rows = tmp_path / "rows.jsonl"
    lines = [json.dumps({"custom_id": f"r{i}", "inputs": [5.1, 3.5, 1.4, 0.2 + i / 1000]}) for i in range(300)]
    lines[10] = "not json"
    rows.write_text("\n".join(lines) + "\n")
    base = f"http://127.0.0.1:{port}"
    with processes(env, [["serve", "--port", str(port)], ["worker", "--models", model]], tmp_path):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                info = httpx.get(f"{base}/v1/models/{model.partition('@')[0]}", headers=bearer(key), timeout=2).json()
                if info.get("ready"):
                    break
            time.sleep(0.2)
        submit = [sys.executable, "-m", "inferq", "jobs", "submit"]
        options = ["--model", model, "--url", base, "--idempotency-key", "cli-test"]
        with_env_key = {**env, "INFERQ_API_KEY": key}
        done = run([*submit, str(rows), *options, "--wait"], with_env_key)
        again = run([*submit, str(rows), *options, "--key", key], env)  # the flag, no INFERQ_API_KEY
        elsewhere = run([*submit, str(rows), *options, "--key", other_tenant], env)  # another tenant's keys
        missing = run([*submit, str(tmp_path / "nope.jsonl"), *options], with_env_key)
        keyless = run([*submit, str(rows), *options], env)
        no_scope = run([*submit, str(rows), *options, "--key", predict_only], env)
        bad_key = run([*submit, str(rows), *options, "--key", "iq_" + "0" * 16 + "_" + "0" * 48], env)

    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded"
    assert job["counts"] == {"total": 300, "succeeded": 299, "failed": 1}
    assert "300/300 rows (1 failed)" in done.stderr
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == job["id"]  # same key, same file: the same job
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert json.loads(elsewhere.stdout)["id"] != job["id"]  # an Idempotency-Key is the tenant's own
    assert missing.returncode == 2
    assert json.loads(missing.stderr)["error"]["code"] == "malformed_request"
    refused = {name: (proc.returncode, json.loads(proc.stderr)["error"]) for name, proc in
               {"keyless": keyless, "no_scope": no_scope, "bad_key": bad_key}.items()}  # fmt: skip
    assert {name: (status, error["code"]) for name, (status, error) in refused.items()} == {
        "keyless": (2, "malformed_request"), "no_scope": (2, "forbidden"), "bad_key": (2, "unauthenticated"),
    }  # fmt: skip
    assert "INFERQ_API_KEY" in refused["keyless"][1]["message"]
