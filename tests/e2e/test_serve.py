"""``inferq serve`` as a real process: it serves, and SIGTERM answers held callers 202, unsubscribes, exits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.contracts.names import Names
from inferq.settings import Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.migrate import upgrade
from inferq.store.registry import Registry

from .apikeys import auth_env, bearer, make_key
from .ports import free_port

SIGNATURE = ModelSignature(
    inputs=(TensorSpec(name="X", dtype="float32", shape=(None, 2)),),
    outputs=(TensorSpec(name="y", dtype="float32", shape=(None,)),),
)


@pytest.fixture
async def served_model(settings: Settings) -> str:
    assert settings.services.database_url
    await upgrade(settings.services.database_url)
    engine = create_engine(settings.services.database_url)
    name = f"serve-{os.getpid()}-{free_port()}"
    try:
        await Registry(create_sessionmaker(engine)).register(name=name, model=b"m", signature=SIGNATURE)
    finally:
        await engine.dispose()
    return name


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_answers_held_callers_with_202_then_exits(
    settings: Settings, redis_client: aioredis.Redis, served_model: str, workers: int, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(
        INFERQ_DATABASE_URL=settings.services.database_url or "",
        INFERQ_REDIS_URL=settings.services.redis_url or "",
        INFERQ_KEY_PREFIX=settings.services.key_prefix,
        INFERQ_WAIT_MAX_S="60",
        **auth_env(settings),
    )
    key = await make_key(settings, "predict")
    names = Names(settings.services.key_prefix)
    stream = names.work_stream(names.partition(served_model, 1))
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inferq", "serve", "--port", str(port), "--workers", str(workers),
            env=env, stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=bearer(key)) as client:
            for _ in range(300):
                try:
                    if (await client.get("/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            for _ in range(200):  # every server process has subscribed its reply channel
                subscribed = await redis_client.pubsub_channels(names.reply_channel("*"))
                if len(subscribed) == workers:
                    break
                await asyncio.sleep(0.05)
            assert len(subscribed) == workers
            held = asyncio.create_task(
                client.post(
                    f"/v1/models/{served_model}/predict", json={"inputs": [[1, 2]]}, headers={"Prefer": "wait=60"}
                )
            )
            for _ in range(100):
                if await redis_client.xlen(stream) == 1:
                    break
                await asyncio.sleep(0.05)
            assert await redis_client.xlen(stream) == 1  # enqueued, and its caller is held
            proc.send_signal(signal.SIGTERM)
            response = await asyncio.wait_for(held, timeout=10)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr = log.read_text()
    assert response.status_code == 202, stderr
    assert response.headers["Location"] == f"/v1/predictions/{response.json()['id']}"
    assert await redis_client.ttl(names.result(response.json()["id"])) > settings.queue.result_ttl_s - 60
    assert await redis_client.pubsub_channels(names.reply_channel("*")) == []
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    logged = [e for e in events if e["event"] == "http.request" and e["route"] == "/v1/models/{model}/predict"]
    assert [(e["status"], e["prediction_id"]) for e in logged] == [(202, response.json()["id"])]
