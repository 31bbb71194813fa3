"""A real worker pool (real Redis, Postgres, ONNX Runtime) records its metrics for real requests: each outcome
counted once, each request's queue wait, each ORT run's rows and time once (the run ledger says which runs
there were), an undecodable entry as a dead letter."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
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
    wait_for,
    wait_results,
    worker_settings,
)

from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.workers.metrics import worker_metrics

Sessions = async_sessionmaker[AsyncSession]


async def test_the_pool_counts_outcomes_waits_runs_and_dead_letters(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version = await register(registry, affine_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    ok = [make_request(version, {"x": np.ones((rows, 4), np.float32)}) for rows in (1, 1, 3, 1, 2)]
    late = make_request(version, {"x": np.ones((1, 4), np.float32)}, ttl_ms=1)
    invalid = make_request(version, {"x": np.ones((1, 3), np.float32)})  # 3 features for a [None, 4] input
    await enqueue(redis_client, part, [*ok, late, invalid])
    await redis_client.xadd(part.work, {"m": b"\xc1 not msgpack"})
    await asyncio.sleep(0.05)  # `late` is past its 1 ms deadline before any worker reads it
    metrics = worker_metrics()
    labels = {"model": version.model, "version": str(version.version)}

    async with running_pool(worker_settings(settings, ledger), sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in (*ok, late, invalid)])
        await wait_for(lambda: _length(redis_client, part.dlq, 1), what="the dead letter")

    assert {r.id: results[r.id].status for r in (late, invalid)} == {late.id: "expired", invalid.id: "failed"}

    def value(name: str, **more: str) -> float:
        return metrics.registry.get_sample_value(name, {**labels, **more}) or 0.0

    outcomes = ("succeeded", "failed", "expired", "dead_lettered", "canceled")
    counted = {o: value("inferq_worker_results_total", lane="interactive", outcome=o) for o in outcomes}
    assert counted == {"succeeded": 5, "failed": 1, "expired": 1, "dead_lettered": 1, "canceled": 0}
    assert value("inferq_worker_queue_wait_seconds_count", lane="interactive") == 7  # the undecodable has none
    assert value("inferq_worker_queue_wait_seconds_sum", lane="interactive") >= 7 * 0.05
    # one observation per ORT run, whatever the batching was: the ledger has one line per request per run
    runs = Counter({line["batch"]: line["rows"] for line in ledger_lines(ledger)})
    assert sum(runs.values()) == 8  # 1 + 1 + 3 + 1 + 2 rows succeeded, each run once
    assert value("inferq_worker_batch_rows_count") == len(runs)
    assert value("inferq_worker_batch_rows_sum") == 8
    assert value("inferq_worker_inference_seconds_count") == len(runs)
    assert 0 < value("inferq_worker_inference_seconds_sum") < 10
    assert value("inferq_worker_job_chunk_rows_count") == 0
    dead = metrics.registry.get_sample_value(
        "inferq_worker_dead_letters_total", {"partition": version.key, "reason": "undecodable"}
    )
    assert dead == 1


async def _length(redis: aioredis.Redis, stream: str, n: int) -> bool:
    return int(await redis.xlen(stream)) == n
