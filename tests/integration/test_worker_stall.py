"""Worker stalls against real Redis: a run ending mid-heartbeat on the real client, and a batch window
longer than the client's socket timeout. Each used to leave entries read and never finished."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from worker_harness import (
    affine_model,
    enqueue,
    ledger_lines,
    make_request,
    partition,
    register,
    running_pool,
    select,
    stream_state,
    wait_results,
    worker_settings,
)

import inferq.workers.executor as executor_module
from inferq.contracts.messages import InferRequest, InferResult
from inferq.contracts.names import Names
from inferq.inputs import encode_tensors
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.connection import connect
from inferq.streams.consumer import Entry, ensure_groups
from inferq.streams.partition import Partition
from inferq.workers.batch import Work, finish
from inferq.workers.clock import RedisClock
from inferq.workers.executor import Executor

Sessions = async_sessionmaker[AsyncSession]
ONE = {"x": np.ones((1, 4), np.float32)}
HANG_GUARD_S = 10.0  # turns a hang into a failure; each run here takes milliseconds
RUNS = 120


class Sources:
    """A ``ModelSource`` whose model is loaded already."""

    def loaded(self, version: object, *, engine: object) -> bool:
        return True

    async def runner(self, version: object, *, engine: object) -> object:
        return object()


@pytest.fixture
async def pending_entry(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[tuple[Partition, Entry]]:
    """A partition with one entry pending for consumer ``c``: what a run's heartbeats claim."""
    part = Partition.of(Names(settings.services.key_prefix), model=f"stall-{id(settings)}", version=1)
    await ensure_groups(redis_client, part)
    await redis_client.xadd(part.work, {"m": b"-"})
    [[_, [(entry_id, _)]]] = await redis_client.xreadgroup(part.group, "c", {part.work: ">"}, count=1)
    yield part, Entry(lane="interactive", id=entry_id.decode(), message=b"-")
    await redis_client.delete(part.work, part.bulk)


async def test_runs_that_end_mid_heartbeat_on_the_real_client_all_end(
    settings: Settings, pending_entry: tuple[Partition, Entry], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11 + redis-py: a heartbeat cancelled as its command is sent may return normally. Every run
    here ends a few loop turns into a heartbeat, sweeping the point where it is cancelled."""
    part, entry = pending_entry
    release, beating = threading.Event(), asyncio.Event()
    real_heartbeat = executor_module.heartbeat

    async def observed(redis: aioredis.Redis, part: Partition, *, consumer: str, entries: list[Entry]) -> None:
        beating.set()
        await real_heartbeat(redis, part, consumer=consumer, entries=entries)

    def held_run(works: Sequence[Work], runner: object, **_: Any) -> list[InferResult]:
        assert release.wait(HANG_GUARD_S)
        return [finish(work, "succeeded") for work in works]

    monkeypatch.setattr(executor_module, "heartbeat", observed)
    monkeypatch.setattr(executor_module, "execute", held_run)
    queue = msgspec.structs.replace(settings.queue, thread_crossover_rows=1, heartbeat_ms=1, block_ms=50)
    redis = connect(settings.services, blocking_ms=queue.block_ms)  # as the worker's: with socket timeouts
    executor = Executor(
        redis=redis, part=part, version=cast(Any, None), settings=msgspec.structs.replace(settings, queue=queue),
        consumer="c", models=cast(Any, Sources()), clock=RedisClock(), ledger=None,
    )  # fmt: skip
    request = InferRequest(
        id="r1", tenant="t", model=part.model, version=part.version, inputs=encode_tensors(ONE), rows=1, ttl_ms=60_000
    )
    work = Work(request=request, enqueued_ms=0, dequeued_ms=0.0)
    ended = 0
    try:
        for turn in range(RUNS):
            release.clear()
            beating.clear()
            run = asyncio.create_task(executor.run([work], keep_alive=[entry]))
            await asyncio.wait_for(beating.wait(), HANG_GUARD_S)
            for _ in range(turn % 8):  # let the heartbeat get that far into its round trip
                await asyncio.sleep(0)
            release.set()
            done, _ = await asyncio.wait([run], timeout=HANG_GUARD_S)
            assert done == {run}, f"run {turn} never ended: its heartbeat loop outlived it"
            assert [r.status for r in run.result()] == ["succeeded"]
            ended += 1
    finally:
        release.set()
        await _end_heartbeats()
        await redis.aclose()
    assert ended == RUNS


async def test_a_batch_window_longer_than_the_socket_timeout_still_forms_the_batch(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """``max_batch_delay_ms`` is a per-version override and may exceed what the client's socket timeout allows
    a blocking read (it is sized for ``block_ms``): the window is waited in reads of at most ``block_ms``."""
    version = await register(registry, affine_model(), overrides={"max_batch_delay_ms": 4000})
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    services = msgspec.structs.replace(settings.services, socket_timeout_s=1.0)  # reads may block ≤ 1.05 s
    quick = worker_settings(
        msgspec.structs.replace(settings, services=services), ledger, block_ms=50, reclaim_min_idle_ms=60_000
    )
    first, second = make_request(version, ONE), make_request(version, ONE)
    await enqueue(redis_client, part, [first])

    with structlog.testing.capture_logs() as logs:
        async with running_pool(quick, sessionmaker, select(version)):
            await _until(lambda: _pending(redis_client, part), what="the first request to be read")
            await enqueue(redis_client, part, [second])  # inside the 4 s window: the same batch
            results = await wait_results(redis_client, settings, [first.id, second.id], timeout_s=30)

    assert [results[r.id].status for r in (first, second)] == ["succeeded", "succeeded"]
    assert [e["event"] for e in logs if e["event"] == "partition.retry"] == []  # no read timed out
    lines = ledger_lines(ledger)
    assert sorted(line["id"] for line in lines) == sorted([first.id, second.id])
    assert len({line["batch"] for line in lines}) == 1  # one run: the window held both
    assert {line["delivery"] for line in lines} == {1}  # nothing was lost to a timed-out read and reclaimed
    assert await stream_state(redis_client, part) == (0, 0, 0)


async def _pending(redis: aioredis.Redis, part: Partition) -> bool:
    try:
        return int((await redis.xpending(part.work, part.group))["pending"]) == 1
    except ResponseError:  # NOGROUP: the pool has not created the group yet
        return False


async def _until(predicate: Callable[[], Any], *, what: str) -> None:
    for _ in range(int(HANG_GUARD_S / 0.01)):
        if await predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _end_heartbeats() -> None:
    """A failing run leaves its heartbeat loop behind (the defect): cancel it until it ends, so the shared
    event loop can still shut down (a cancel may be lost again, hence the retries)."""
    for _ in range(50):
        left = [t for t in asyncio.all_tasks() if t.get_name().startswith("heartbeat:")]
        if not left:
            return
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=0.2)
