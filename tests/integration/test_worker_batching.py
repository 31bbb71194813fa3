"""Worker micro-batching against real Redis and Postgres: one ORT run per batch, rows, deadlines, bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import numpy as np
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from worker_harness import (
    affine_model,
    enqueue,
    gather_model,
    ledger_lines,
    make_request,
    outputs_of,
    partition,
    register,
    running_pool,
    select,
    stream_state,
    wait_results,
    worker_settings,
)

from inferq.cli.demo import build as build_demo
from inferq.contracts.messages import Pending, Reply, result_decoder
from inferq.contracts.names import Names
from inferq.engine import Runner, to_predictions
from inferq.settings import Settings
from inferq.store.registry import Registry
from inferq.streams.results import ResultStore, ResultTTL, decode_stored

Sessions = async_sessionmaker[AsyncSession]


async def test_one_read_is_one_run_with_outputs_exactly_as_alone(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    onnx = affine_model()
    version = await register(registry, onnx)
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((int(n), 4)).astype(np.float32) for n in rng.integers(1, 4, size=10)]
    requests = [make_request(version, {"x": x}) for x in inputs]
    await enqueue(redis_client, part, requests)  # all queued before the pool starts: one read takes them all

    async with running_pool(worker_settings(settings, ledger), sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in requests])

    alone = Runner.load(onnx, settings=settings.engine)
    total_rows = sum(len(x) for x in inputs)
    for request, x in zip(requests, inputs, strict=True):
        result = results[request.id]
        assert result.status == "succeeded"
        got = outputs_of(result)["y"]
        assert np.array_equal(got, alone.run({"x": x})["y"])
        assert np.array_equal(got, 2 * x + 1)
        assert result.timings is not None
        assert result.timings.batch_rows == total_rows
    lines = ledger_lines(ledger)
    assert len(lines) == 10
    assert len({line["batch"] for line in lines}) == 1  # exactly one ORT run
    assert {line["rows"] for line in lines} == {total_rows}
    assert {line["delivery"] for line in lines} == {1}
    assert await stream_state(redis_client, part) == (0, 0, 0)  # acked and deleted


async def test_predictions_match_the_model_run_alone(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    onnx = build_demo("iris", 1).onnx
    version = await register(registry, onnx)
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    name = version.signature.inputs[0].name
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 5.0, 1.9]])
    requests = [make_request(version, {name: row[None, :].astype(np.float32)}, output="predictions") for row in rows]
    await enqueue(redis_client, part, requests)

    async with running_pool(worker_settings(settings, ledger), sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in requests])

    runner = Runner.load(onnx, settings=settings.engine)
    # Split exactly: the same four rows run as one batch here give the very same numbers.
    together = to_predictions(runner.signature, runner.run({name: rows.astype(np.float32)}))
    assert [p for r in requests for p in results[r.id].predictions] == together
    for request, row in zip(requests, rows, strict=True):
        # NOTE: ORT's GEMM kernels differ in the last bits between batch sizes; labels do not.
        [alone] = to_predictions(runner.signature, runner.run({name: row[None, :].astype(np.float32)}))
        [got] = results[request.id].predictions
        assert got.label == alone.label
        assert got.probabilities is not None
        assert alone.probabilities is not None
        assert np.allclose(list(got.probabilities.values()), list(alone.probabilities.values()), rtol=1e-5)
    assert [p.class_name for r in requests for p in results[r.id].predictions] == [
        "setosa", "virginica", "versicolor", "virginica",
    ]  # fmt: skip
    assert len({line["batch"] for line in ledger_lines(ledger)}) == 1


async def test_max_batch_counts_rows_not_messages(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version = await register(registry, affine_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    requests = [make_request(version, {"x": np.full((3, 4), k, np.float32)}) for k in range(5)]
    await enqueue(redis_client, part, requests)

    async with running_pool(worker_settings(settings, ledger, max_batch=6), sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in requests])

    runs: dict[str, int] = {}
    for line in ledger_lines(ledger):
        runs[line["batch"]] = line["rows"]
    assert sorted(runs.values()) == [3, 6, 6]  # 15 rows in runs of at most 6
    assert sorted(r.timings.batch_rows for r in results.values() if r.timings) == [3, 6, 6, 6, 6]


async def test_version_overrides_set_the_batch_size(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version = await register(registry, affine_model(), overrides={"max_batch": 2})
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    requests = [make_request(version, {"x": np.ones((1, 4), np.float32)}) for _ in range(4)]
    await enqueue(redis_client, part, requests)

    async with running_pool(worker_settings(settings, ledger), sessionmaker, select(version)):
        await wait_results(redis_client, settings, [r.id for r in requests])

    assert sorted(line["rows"] for line in ledger_lines(ledger)) == [2, 2, 2, 2]
    assert len({line["batch"] for line in ledger_lines(ledger)}) == 2


async def test_expired_request_is_never_run(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version = await register(registry, affine_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    late = make_request(version, {"x": np.ones((1, 4), np.float32)}, ttl_ms=1)
    fresh = make_request(version, {"x": np.ones((1, 4), np.float32)})
    await enqueue(redis_client, part, [late, fresh])
    await asyncio.sleep(0.02)  # late's deadline (enqueue + 1 ms, Redis's clock) has passed

    async with running_pool(worker_settings(settings, ledger), sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [late.id, fresh.id])

    assert results[late.id].status == "expired"
    assert results[late.id].error is not None
    assert results[late.id].error.code == "deadline_exceeded"
    assert results[fresh.id].status == "succeeded"
    assert [line["id"] for line in ledger_lines(ledger)] == [fresh.id]  # zero runs of the expired one
    assert await stream_state(redis_client, part) == (0, 0, 0)


async def test_invalid_input_fails_at_once_without_its_batch_mates(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version = await register(registry, affine_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    good = [make_request(version, {"x": np.ones((1, 4), np.float32)}) for _ in range(2)]
    bad = [
        make_request(version, {"x": np.ones((1, 3), np.float32)}),  # wrong width
        make_request(version, {"x": np.ones((1, 4), np.float64)}),  # wrong dtype
        make_request(version, {"z": np.ones((1, 4), np.float32)}),  # unknown input
        msgspec.structs.replace(make_request(version, {"x": np.ones((2, 4), np.float32)}), rows=1),  # rows lie
    ]
    await enqueue(redis_client, part, [good[0], *bad, good[1]])

    async with running_pool(worker_settings(settings, ledger), sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in good + bad])

    assert [results[r.id].status for r in good] == ["succeeded", "succeeded"]
    for request in bad:
        result = results[request.id]
        assert result.status == "failed"
        assert result.error is not None
        assert result.error.code == "invalid_input"
    lines = ledger_lines(ledger)
    assert sorted(line["id"] for line in lines) == sorted(r.id for r in good)  # never run, never retried
    assert len({line["batch"] for line in lines}) == 1
    assert await stream_state(redis_client, part) == (0, 0, 0)


async def test_a_failing_run_is_isolated_to_the_bad_request(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version = await register(registry, gather_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    requests = [make_request(version, {"i": np.array([k], np.int64)}, output="predictions") for k in (0, 20, 3)]
    await enqueue(redis_client, part, requests)

    async with running_pool(worker_settings(settings, ledger), sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [r.id for r in requests])

    ok, poison, ok2 = (results[r.id] for r in requests)
    assert (ok.status, ok.predictions[0].value) == ("succeeded", 0.0)
    assert (ok2.status, ok2.predictions[0].value) == ("succeeded", 30.0)
    assert poison.status == "failed"
    assert poison.error is not None
    assert poison.error.code == "inference_failed"
    runs: dict[str, list[str]] = {}
    for line in ledger_lines(ledger):
        runs.setdefault(line["batch"], []).append(line["id"])
    assert len(runs) == 4  # the batch of three, then each request alone
    assert sorted(len(ids) for ids in runs.values()) == [1, 1, 1, 3]


async def test_interactive_lane_goes_first(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    version = await register(registry, affine_model())
    part, ledger = partition(settings, version), tmp_path / "ledger.jsonl"
    bulk = [make_request(version, {"x": np.ones((1, 4), np.float32)}) for _ in range(3)]
    interactive = [make_request(version, {"x": np.ones((1, 4), np.float32)}) for _ in range(3)]
    await enqueue(redis_client, part, bulk, lane="bulk")  # queued first
    await enqueue(redis_client, part, interactive)

    async with running_pool(worker_settings(settings, ledger, max_batch=3), sessionmaker, select(version)):
        await wait_results(redis_client, settings, [r.id for r in bulk + interactive])

    lines = ledger_lines(ledger)
    assert [line["id"] for line in lines] == [r.id for r in interactive + bulk]
    batches = [[line["id"] for line in lines if line["batch"] == b] for b in dict.fromkeys(li["batch"] for li in lines)]
    # One batch of the interactive requests, then the bulk entries: read one at a time, so that a job's
    # chunks never pile up in a worker ahead of interactive requests (or away from other workers).
    assert batches == [[r.id for r in interactive], *[[r.id] for r in bulk]]
    assert await stream_state(redis_client, part) == (0, 0, 0)


async def test_results_are_announced_to_the_reply_target_once(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis
) -> None:
    version = await register(registry, affine_model())
    part, names = partition(settings, version), Names(settings.services.key_prefix)
    to_api = make_request(version, {"x": np.ones((1, 4), np.float32)}, reply=Reply(kind="api", name="api-test"))
    to_producer = make_request(version, {"x": np.ones((1, 4), np.float32)}, reply=Reply(kind="producer", name="p1"))
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(names.reply_channel("api-test"))
        await enqueue(redis_client, part, [to_api, to_producer])
        async with running_pool(worker_settings(settings), sessionmaker, select(version)):
            await wait_results(redis_client, settings, [to_api.id, to_producer.id])
            message = None
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    published = decode_stored(message["data"])
    assert (published.id, published.status) == (to_api.id, "succeeded")
    replies = await redis_client.xrange(names.producer_replies("p1"))
    assert [result_decoder.decode(fields[b"m"]).id for _, fields in replies] == [to_producer.id]


async def test_result_ttl_is_long_only_after_a_placeholder(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis
) -> None:
    version = await register(registry, affine_model())
    part, names = partition(settings, version), Names(settings.services.key_prefix)
    waited = make_request(version, {"x": np.ones((1, 4), np.float32)})
    answered_202 = make_request(version, {"x": np.ones((1, 4), np.float32)})
    store = ResultStore(redis_client, ttl=ResultTTL(long=5000, short=50))
    pending = Pending(id=answered_202.id, tenant="default", model=version.model, version=version.version)
    await store.placehold(key=names.result(answered_202.id), pending=pending)
    await enqueue(redis_client, part, [waited, answered_202])

    fast = worker_settings(settings, result_ttl_s=5000, result_short_ttl_s=50)
    async with running_pool(fast, sessionmaker, select(version)):
        await wait_results(redis_client, settings, [waited.id, answered_202.id])

    assert 0 < await redis_client.ttl(names.result(waited.id)) <= 50
    assert 4000 < await redis_client.ttl(names.result(answered_202.id)) <= 5000


async def test_undecodable_message_is_dead_lettered_at_once(
    settings: Settings, registry: Registry, sessionmaker: Sessions, redis_client: aioredis.Redis
) -> None:
    version = await register(registry, affine_model())
    part = partition(settings, version)
    good = make_request(version, {"x": np.ones((1, 4), np.float32)})
    garbage_id = await redis_client.xadd(part.work, {"m": b"\x93not an infer request"})
    await enqueue(redis_client, part, [good])

    async with running_pool(worker_settings(settings), sessionmaker, select(version)):
        results = await wait_results(redis_client, settings, [good.id])

    assert results[good.id].status == "succeeded"
    dead = await redis_client.xrange(part.dlq)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"origin_id"] == garbage_id
    assert fields[b"reason"].startswith(b"undecodable message")
    assert await stream_state(redis_client, part) == (0, 0, 0)
