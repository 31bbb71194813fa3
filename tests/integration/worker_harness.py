"""What the worker tests share: tiny ONNX models, requests, a pool in this event loop, results, the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnx
import redis.asyncio as aioredis
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.messages import InferRequest, InferResult, Lane, OutputForm, Reply, message_encoder
from inferq.contracts.models import ModelVersion
from inferq.contracts.names import Names
from inferq.engine import read_signature
from inferq.inputs import decode_tensors, encode_tensors
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.connection import connect
from inferq.streams.partition import Partition
from inferq.streams.producer import Producer, Submission
from inferq.streams.results import decode_stored
from inferq.workers.pool import WorkerPool
from inferq.workers.selection import Selection


def build(inputs: Sequence[Any], outputs: Sequence[Any], nodes: Sequence[Any], inits: Sequence[Any] = ()) -> bytes:
    graph = helper.make_graph(
        list(nodes),
        "worker-test",
        [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in inputs],
        [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in outputs],
        initializer=list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def affine_model() -> bytes:
    """``y = 2x + 1`` on float32 ``[None, 4]``: exact outputs, any batch."""
    return build(
        [("x", TensorProto.FLOAT, [None, 4])],
        [("y", TensorProto.FLOAT, [None, 4])],
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
        [numpy_helper.from_array(np.float32(2), "two"), numpy_helper.from_array(np.float32(1), "one")],
    )


def gather_model() -> bytes:
    """``y = table[i]`` for int64 ``i`` in 0..9; ONNX Runtime raises for any other index."""
    table = numpy_helper.from_array(np.arange(10, dtype=np.float32) * 10, "table")
    return build(
        [("i", TensorProto.INT64, [None])],
        [("y", TensorProto.FLOAT, [None])],
        [helper.make_node("Gather", ["table", "i"], ["y"], axis=0)],
        [table],
    )


def slow_model(*, width: int = 1024, depth: int = 200) -> bytes:
    """``depth`` chained ``[width, width]`` MatMul + Tanh: ~2.5 ms per row in batches, ~30 ms alone."""
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "w")
    nodes, last = [], "x"
    for k in range(depth):
        nodes += [helper.make_node("MatMul", [last, "w"], [f"m{k}"]), helper.make_node("Tanh", [f"m{k}"], [f"t{k}"])]
        last = f"t{k}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    return build([("x", TensorProto.FLOAT, [None, width])], [("y", TensorProto.FLOAT, [None, width])], nodes, [weights])


async def register(
    registry: Registry, onnx_bytes: bytes, *, overrides: dict[str, int | float] | None = None, name: str | None = None
) -> ModelVersion:
    name = name or f"w-{secrets.token_hex(5)}"
    return await registry.register(
        name=name, model=onnx_bytes, signature=read_signature(onnx_bytes), overrides=overrides
    )


def make_request(
    version: ModelVersion,
    feeds: dict[str, np.ndarray],
    *,
    ttl_ms: int = 60_000,
    output: OutputForm = "tensors",
    reply: Reply | None = None,
    request_id: str | None = None,
) -> InferRequest:
    rows = int(next(iter(feeds.values())).shape[0])
    return InferRequest(
        id=request_id or secrets.token_hex(8),
        tenant="default",
        model=version.model,
        version=version.version,
        inputs=encode_tensors(feeds),
        rows=rows,
        ttl_ms=ttl_ms,
        output=output,
        reply=reply,
    )


def partition(settings: Settings, version: ModelVersion) -> Partition:
    return Partition.of(Names(settings.services.key_prefix), model=version.model, version=version.version)


async def enqueue(
    redis: aioredis.Redis, part: Partition, requests: Sequence[InferRequest], lane: Lane = "interactive"
) -> list[str]:
    """XADD through the admission-checked producer (coalesced into one pipeline, in order)."""
    producer = Producer(redis)
    stream = part.stream(lane)
    subs = [
        Submission(stream=stream, rate_key=part.rate_key, limit=100_000, message=message_encoder.encode(r))
        for r in requests
    ]
    return list(await asyncio.gather(*(producer.submit(s) for s in subs)))


def worker_settings(settings: Settings, ledger: Path | None = None, **queue: Any) -> Settings:
    """Fast timings for tests; ``queue`` overrides any ``QueueSettings`` field."""
    fast = {
        "block_ms": 50,
        "reclaim_interval_ms": 100,
        "reclaim_min_idle_ms": 10_000,
        "discovery_interval_s": 0.2,
        "heartbeat_ms": 200,
        "run_ledger": str(ledger) if ledger else None,
    }
    return msgspec.structs.replace(settings, queue=msgspec.structs.replace(settings.queue, **{**fast, **queue}))


@contextlib.asynccontextmanager
async def running_pool(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], selection: Selection, consumer: str | None = None
) -> AsyncIterator[WorkerPool]:
    """A ``WorkerPool`` as a task of this event loop; stopped (drained) and checked on the way out."""
    redis = connect(settings.services, blocking_ms=settings.queue.block_ms)
    pool = WorkerPool(settings, redis=redis, sessions=sessions, selection=selection, consumer=consumer)
    task = asyncio.create_task(pool.run())
    try:
        yield pool
        assert not task.done(), task.exception() if task.done() else None
    finally:
        pool.stop()
        await asyncio.wait_for(task, timeout=15)
        await redis.aclose()


def select(*versions: ModelVersion) -> Selection:
    return Selection.parse(all_models=False, models=[v.key for v in versions])


async def wait_results(
    redis: aioredis.Redis, settings: Settings, ids: Sequence[str], timeout_s: float = 10.0
) -> dict[str, InferResult]:
    """Poll the result keys until every id has a terminal result."""
    names = Names(settings.services.key_prefix)
    deadline = time.monotonic() + timeout_s
    while True:
        values = await redis.mget([names.result(i) for i in ids])
        found = {i: decode_stored(v) for i, v in zip(ids, values, strict=True) if v is not None}
        done = {i: r for i, r in found.items() if isinstance(r, InferResult)}
        if len(done) == len(ids):
            return done
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(ids) - len(done)} of {len(ids)} results missing after {timeout_s}s")
        await asyncio.sleep(0.02)


async def wait_for(predicate: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def outputs_of(result: InferResult) -> dict[str, np.ndarray]:
    return decode_tensors(result.tensors)


def ledger_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def stream_state(redis: aioredis.Redis, part: Partition) -> tuple[int, int, int]:
    """(XLEN work, XLEN bulk, entries pending in the group on both lanes)."""
    pending = 0
    for stream in (part.work, part.bulk):
        with contextlib.suppress(Exception):
            pending += int((await redis.xpending(stream, part.group))["pending"])
    return int(await redis.xlen(part.work)), int(await redis.xlen(part.bulk)), pending
