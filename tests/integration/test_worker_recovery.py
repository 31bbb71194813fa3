"""Worker crash recovery against real Redis: reclaim, dead letters, heartbeats, NOGROUP, discovery, the DLQ."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
import structlog
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
    slow_model,
    stream_state,
    wait_for,
    wait_results,
    worker_settings,
)

from inferq.cli.dlq import run_dlq
from inferq.contracts.names import Names
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.consumer import ensure_groups
from inferq.streams.partition import Partition
from inferq.streams.results import decode_stored
from inferq.workers.pool import WorkerPool
from inferq.workers.selection import Selection

Sessions = async_sessionmaker[AsyncSession]
ONE = {"x": np.ones((1, 4), np.float32)}


async def test_reclaimer_completes_what_a_dead_consumer_left_pending(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version = await register(registry, affine_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    await ensure_groups(redis_client, part)
    requests = [make_request(version, ONE) for _ in range(3)]
    await enqueue(redis_client, part, requests)
    taken = await redis_client.xreadgroup(part.group, "dead:1", {part.work: ">"}, count=10)  # then "crashes"
    assert len(taken[0][1]) == 3

    fast = worker_settings(settings, ledger, reclaim_min_idle_ms=300)
    async with running_pool(fast, sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in requests])

    assert {r.status for r in results.values()} == {"succeeded"}
    lines = ledger_lines(ledger)
    assert sorted(line["id"] for line in lines) == sorted(r.id for r in requests)
    assert {line["delivery"] for line in lines} == {2}
    assert {line["rows"] for line in lines} == {1}
    assert len({line["batch"] for line in lines}) == 3  # reclaimed entries run one at a time
    assert await stream_state(redis_client, part) == (0, 0, 0)


async def test_an_entry_delivered_too_often_is_dead_lettered_once_and_alone(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version = await register(registry, affine_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    await ensure_groups(redis_client, part)
    poison, *mates = [make_request(version, ONE) for _ in range(3)]
    poison_entry, *_ = await enqueue(redis_client, part, [poison, *mates])
    await redis_client.xreadgroup(part.group, "dead:1", {part.work: ">"}, count=10)  # delivery 1 for all three
    for crashed in ("dead:2", "dead:3"):  # two more deliveries of the poison, each ending in a crash
        await redis_client.xclaim(part.work, part.group, crashed, 0, [poison_entry])

    fast = worker_settings(settings, ledger, reclaim_min_idle_ms=200, max_deliveries=3)
    async with running_pool(fast, sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in (poison, *mates)])
        await asyncio.sleep(0.5)  # several more reclaim sweeps: nothing is dead-lettered twice

    assert results[poison.id].status == "dead_lettered"
    error = results[poison.id].error
    assert error is not None
    assert "delivered 4 times (max 3)" in error.message
    assert [results[m.id].status for m in mates] == ["succeeded", "succeeded"]
    dead = await redis_client.xrange(part.dlq)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"origin_id"].decode() == poison_entry
    assert fields[b"deliveries"] == b"4"
    assert fields[b"reason"] == b"delivered 4 times (max 3): worker crashed or timed out"
    lines = ledger_lines(ledger)
    assert poison.id not in {line["id"] for line in lines}
    assert sorted(line["id"] for line in lines) == sorted(m.id for m in mates)
    assert await stream_state(redis_client, part) == (0, 0, 0)


@pytest.mark.parametrize(("heartbeat_ms", "runs"), [(50, 1), (60_000, 2)], ids=["heartbeat", "no-heartbeat"])
async def test_heartbeats_keep_a_long_run_from_being_reclaimed(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path,
    heartbeat_ms: int, runs: int,
) -> None:  # fmt: skip
    version = await register(registry, slow_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    request = make_request(version, {"x": np.ones((256, 1024), np.float32)})  # a run of ~0.6 s
    await enqueue(redis_client, part, [request])

    fast = worker_settings(
        settings, ledger, reclaim_min_idle_ms=400, reclaim_interval_ms=50, heartbeat_ms=heartbeat_ms,
        thread_crossover_rows=1,
    )  # fmt: skip
    async with running_pool(fast, sessionmaker, select(version)):
        # generous bounds: the run is CPU-heavy (~0.6 s quiet) and CI machines are shared
        results = await wait_results(redis_client, settings, [request.id], timeout_s=60)
        await wait_for(lambda: _no_pending(redis_client, part), timeout_s=60, what="the reclaimed run to settle")

    assert results[request.id].status == "succeeded"
    assert [line["delivery"] for line in ledger_lines(ledger)] == list(range(1, runs + 1))


async def test_groups_are_recreated_after_the_stream_vanishes(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis
) -> None:
    version = await register(registry, affine_model())
    part = partition(settings, version)
    before, after = make_request(version, ONE), make_request(version, ONE)
    async with running_pool(worker_settings(settings), sessionmaker, select(version)):
        await enqueue(redis_client, part, [before])
        await wait_results(redis_client, settings, [before.id])
        await redis_client.delete(part.work, part.bulk)  # as after a Redis restart without data
        await asyncio.sleep(0.2)
        await enqueue(redis_client, part, [after])  # XADD re-creates the stream, without the group
        results = await wait_results(redis_client, settings, [after.id])

    assert results[after.id].status == "succeeded"
    groups = await redis_client.xinfo_groups(part.work)
    assert [g["name"] for g in groups] == [b"workers"]
    assert await stream_state(redis_client, part) == (0, 0, 0)


async def test_redis_down_is_retried_with_backoff_and_nothing_crashes(
    settings: Settings, registry: Registry, sessionmaker: Sessions
) -> None:
    version = await register(registry, affine_model())
    unreachable = msgspec.structs.replace(settings.services, redis_url="redis://127.0.0.1:1/0", socket_timeout_s=0.2)
    down = worker_settings(msgspec.structs.replace(settings, services=unreachable))
    with structlog.testing.capture_logs() as logs:
        async with running_pool(down, sessionmaker, select(version)) as pool:
            await wait_for(lambda: _serves(pool, version.key), what="the partition to start")  # slow on a busy CI
            task = pool.running(version.key)
            await asyncio.sleep(1.5)
            assert pool.running(version.key) is task  # the same partition task, never crashed and restarted
    events = [entry["event"] for entry in logs]
    assert "partition.crashed" not in events
    assert 3 <= events.count("partition.retry") <= 8  # 50 ms doubling to 2 s: no hot loop


async def test_all_serves_versions_registered_later_and_drains_archived_ones(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis
) -> None:
    everything = Selection.parse(all_models=True, models=None)
    async with running_pool(worker_settings(settings), sessionmaker, everything) as pool:
        version = await register(registry, affine_model())  # after the pool started
        await wait_for(lambda: _serves(pool, version.key), what="discovery of the new version")
        request = make_request(version, ONE)
        await enqueue(redis_client, partition(settings, version), [request])
        results = await wait_results(redis_client, settings, [request.id])
        assert results[request.id].status == "succeeded"

        newer = await register(registry, affine_model(), name=version.model)
        await wait_for(lambda: _serves(pool, newer.key), what="discovery of the second version")
        await registry.set_alias(version.model, "default", weights={newer.version: 100})  # then 1 may be archived
        await registry.set_status(version.model, version.version, "archived")
        await wait_for(lambda: _serves(pool, version.key, expected=False), what="the archived version to drain")
        assert newer.key in pool.partitions  # the other one is still served


async def test_patched_overrides_restart_the_partition_with_them(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis
) -> None:
    everything = Selection.parse(all_models=True, models=None)
    async with running_pool(worker_settings(settings), sessionmaker, everything) as pool:
        version = await register(registry, affine_model())
        await wait_for(lambda: _serves(pool, version.key), what="discovery of the new version")
        first = pool.running(version.key)
        await registry.update_version(version.model, version.version, overrides={"max_batch": 3})

        async def reconfigured() -> bool:
            task = pool.running(version.key)
            return task is not None and task is not first and pool.serving(version.key).overrides == {"max_batch": 3}

        await wait_for(reconfigured, what="the partition to restart with the new overrides")
        request = make_request(version, ONE)
        await enqueue(redis_client, partition(settings, version), [request])
        results = await wait_results(redis_client, settings, [request.id])
    assert first is not None
    assert first.done()
    assert not first.cancelled()
    assert first.exception() is None  # stopped cleanly, not crashed
    assert results[request.id].status == "succeeded"


async def test_dlq_list_inspect_replay_purge(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    version = await register(registry, affine_model())
    part, names = partition(settings, version), Names(settings.services.key_prefix)
    await ensure_groups(redis_client, part)
    requests = [make_request(version, ONE) for _ in range(3)]
    entries = await enqueue(redis_client, part, requests)
    await redis_client.xreadgroup(part.group, "dead:1", {part.work: ">"}, count=10)
    for _ in range(3):
        await redis_client.xclaim(part.work, part.group, "dead:2", 0, entries)

    fast = worker_settings(settings, reclaim_min_idle_ms=100, max_deliveries=3)
    async with running_pool(fast, sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in requests])
    assert {r.status for r in results.values()} == {"dead_lettered"}

    async def dlq(verb: str, *ids: str) -> object:
        capsys.readouterr()
        assert await run_dlq(settings, verb=verb, partition=version.key, ids=list(ids)) == 0
        return json.loads(capsys.readouterr().out)

    listed = await dlq("list")
    assert isinstance(listed, list)
    assert len(listed) == 3
    assert [item["origin_id"] for item in listed] == entries
    assert {item["deliveries"] for item in listed} == {5}
    assert all("request" not in item for item in listed)
    inspected = await dlq("inspect", listed[0]["id"])
    assert isinstance(inspected, list)
    assert len(inspected) == 1
    assert inspected[0]["request"]["id"] == requests[0].id

    replayed = await dlq("replay", listed[0]["id"])
    assert isinstance(replayed, list)
    assert [r["request_id"] for r in replayed] == [requests[0].id]
    assert await redis_client.xlen(part.dlq) == 2
    stored = decode_stored(await redis_client.get(names.result(requests[0].id)))
    assert stored.status == "queued"  # the dead_lettered result gave way to the replay
    async with running_pool(worker_settings(settings), sessionmaker, select(version)):
        await wait_for(lambda: _status(redis_client, names, requests[0].id, "succeeded"), what="the replayed run")

    assert await dlq("purge", listed[1]["id"]) == {"partition": version.key, "purged": 1}
    assert await dlq("purge") == {"partition": version.key, "purged": 1}
    assert await redis_client.xlen(part.dlq) == 0
    assert await stream_state(redis_client, part) == (0, 0, 0)


async def _no_pending(redis: aioredis.Redis, part: Partition) -> bool:
    return (await stream_state(redis, part))[2] == 0


async def _serves(pool: WorkerPool, key: str, *, expected: bool = True) -> bool:
    return (key in pool.partitions) == expected


async def _status(redis: aioredis.Redis, names: Names, request_id: str, status: str) -> bool:
    value = await redis.get(names.result(request_id))
    return value is not None and decode_stored(value).status == status
