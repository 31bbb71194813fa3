"""Direct producers: ingress stream → forwarder → worker → the producer's reply stream."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import msgspec
import redis.asyncio as aioredis
from worker_harness import register, running_pool, select, worker_settings

from inferq.cli.demo import build
from inferq.contracts.names import Names
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.connection import connect
from inferq.workers.ingress import GROUP, Forwarder, Forwarding, request_id

ROOT = Path(__file__).resolve().parents[2]
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def producer_settings(settings: Settings, producer: str) -> Settings:
    fast = worker_settings(settings)
    queue = msgspec.structs.replace(fast.queue, producers=f"{producer}=default")
    return msgspec.structs.replace(fast, queue=queue)


async def read_replies(redis: aioredis.Redis, stream: str, count: int, timeout_s: float = 10) -> list[dict]:
    replies: list[dict] = []
    last = "0-0"
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(replies) < count:
        assert asyncio.get_running_loop().time() < deadline, f"only {len(replies)} of {count} replies"
        for _, entries in await redis.xread({stream: last}, block=200) or []:
            for entry_id, fields in entries:
                last = entry_id
                replies.append(msgspec.msgpack.decode(fields[b"m"]))
    return replies


async def test_example_producer_gets_its_prediction(settings: Settings, registry: Registry, sessionmaker) -> None:
    producer = f"p{secrets.token_hex(3)}"
    model = f"iris-{secrets.token_hex(3)}"
    version = await register(registry, build("iris", 1).onnx, name=model)
    pool_settings = producer_settings(settings, producer)
    example = (ROOT / "examples" / "producer.py").read_text().replace('"model": "iris"', f'"model": "{model}"')
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"producer-{producer}.py"
    script.write_text(example)
    env = {
        **os.environ,
        "INFERQ_REDIS_URL": settings.services.redis_url or "",
        "INFERQ_KEY_PREFIX": settings.services.key_prefix,
        "PRODUCER": producer,
    }
    async with running_pool(pool_settings, sessionmaker, select(version)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    script.unlink()
    assert proc.returncode == 0, err.decode()
    result = msgspec.json.decode(out)
    assert result["status"] == "succeeded"
    assert result["model"] == model
    assert result["predictions"][0]["class_name"] == "setosa"
    assert result["id"].startswith(f"{producer}:")


async def test_invalid_entries_are_dead_lettered_with_reasons_and_answered(
    settings: Settings, registry: Registry, sessionmaker, redis_client: aioredis.Redis
) -> None:
    producer = f"p{secrets.token_hex(3)}"
    version = await register(registry, build("iris", 1).onnx, name=f"iris-{secrets.token_hex(3)}")
    names = Names(settings.services.key_prefix)
    ingress = names.ingress_stream(producer)
    entries = {
        "undecodable": b"\xc1 not msgpack",
        "unknown model": msgspec.msgpack.encode({"kind": "ingress.v1", "model": "no-such-model", "inputs": [IRIS_ROW]}),
        "bad inputs": msgspec.msgpack.encode({"kind": "ingress.v1", "model": version.model, "inputs": [[1.0, "x"]]}),
        "good": msgspec.msgpack.encode({"kind": "ingress.v1", "model": version.model, "inputs": [IRIS_ROW]}),
    }
    ids = {k: (await redis_client.xadd(ingress, {"m": v})).decode() for k, v in entries.items()}
    async with running_pool(producer_settings(settings, producer), sessionmaker, select(version)):
        replies = await read_replies(redis_client, names.producer_replies(producer), 4)
    by_id = {r["id"]: r for r in replies}
    assert len(by_id) == 4
    assert by_id[request_id(producer, ids["good"])]["status"] == "succeeded"
    codes = {
        k: by_id[request_id(producer, ids[k])]["error"]["code"] for k in ("undecodable", "unknown model", "bad inputs")
    }
    assert codes == {"undecodable": "invalid_input", "unknown model": "model_not_found", "bad inputs": "invalid_input"}
    dead = await redis_client.xrange(f"{ingress}:dlq")
    reasons = {fields[b"origin_id"].decode(): fields[b"reason"].decode() for _, fields in dead}
    assert set(reasons) == {ids["undecodable"], ids["unknown model"], ids["bad inputs"]}
    assert reasons[ids["bad inputs"]].startswith("invalid_input: row 0")
    assert await redis_client.xlen(ingress) == 0  # settled entries are acked and deleted


async def test_re_forwarding_an_entry_is_idempotent(settings: Settings, registry: Registry, redis_client) -> None:
    """A forwarder that crashed after XADD but before its ack forwards the entry again: one work entry."""
    producer = f"p{secrets.token_hex(3)}"
    version = await register(registry, build("iris", 1).onnx, name=f"iris-{secrets.token_hex(3)}")
    names = Names(settings.services.key_prefix)
    raw = msgspec.msgpack.encode({"kind": "ingress.v1", "model": version.model, "inputs": [IRIS_ROW]})
    entry_id = (await redis_client.xadd(names.ingress_stream(producer), {"m": raw})).decode()
    redis = connect(settings.services)
    options = Forwarding(producers={producer: "default"}, admission_limit=100, deadline_default_ms=60_000,
                         max_elements=1000)  # fmt: skip
    forwarder = Forwarder(redis, names=names, resolve=registry.resolve, options=options)
    await forwarder.ensure_groups()
    await forwarder.settle(producer, entry_id, raw)
    await forwarder.settle(producer, entry_id, raw)
    await redis.aclose()
    work = names.work_stream(names.partition(version.model, version.version))
    assert await redis_client.xlen(work) == 1


async def test_full_partition_leaves_the_entry_pending(settings: Settings, registry: Registry, redis_client) -> None:
    limit = 1
    producer = f"p{secrets.token_hex(3)}"
    version = await register(registry, build("iris", 1).onnx, name=f"iris-{secrets.token_hex(3)}")
    names = Names(settings.services.key_prefix)
    ingress = names.ingress_stream(producer)
    raws = [msgspec.msgpack.encode({"kind": "ingress.v1", "model": version.model, "inputs": [IRIS_ROW]})] * 2
    redis = connect(settings.services)
    options = Forwarding(producers={producer: "default"}, admission_limit=limit, deadline_default_ms=60_000,
                         max_elements=1000, block_ms=100)  # fmt: skip
    forwarder = Forwarder(redis, names=names, resolve=registry.resolve, options=options)
    await forwarder.ensure_groups()
    for raw in raws:
        await redis_client.xadd(ingress, {"m": raw})
    settled = await forwarder.forward_once()
    await redis.aclose()
    assert settled == 1  # the second one found the partition full
    pending = await redis_client.xpending(ingress, GROUP)
    assert pending["pending"] == 1
    assert await redis_client.xlen(ingress) == 1  # kept: the ingress stream is the buffer
