"""A poison entry that kills its worker process on every run (SIGFPE inside ONNX Runtime, no test hook):
dead-lettered after exactly ``max_deliveries`` runs, its batch-mates not, and other requests keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import defaultdict
from typing import Any

import httpx
import pytest

from inferq.contracts.messages import request_decoder

from .harness import Stack, eventually, stream_state, unique
from .models import INT32_MIN, negate_model

MAX_DELIVERIES = 3
MATES = 4
WORKER_ENV = {
    "INFERQ_MAX_DELIVERIES": MAX_DELIVERIES,
    "INFERQ_RESTART_BACKOFF_MS": 100,
    "INFERQ_RESTART_BACKOFF_MAX_MS": 400,
    "INFERQ_RECLAIM_MIN_IDLE_MS": 500,
    "INFERQ_RECLAIM_INTERVAL_MS": 100,
    "INFERQ_BLOCK_MS": 200,
}
ASYNC = {"Prefer": "respond-async"}


@pytest.mark.parametrize("poison_at", ["last", "first"], ids=["poison-last", "poison-first"])
async def test_poison_is_dead_lettered_after_max_deliveries_alone(stack: Stack, poison_at: str) -> None:
    version = await stack.register(negate_model(), name=unique("poison"))
    part = stack.partition(version)
    api = stack.serve(INFERQ_WAIT_MAX_S=60)
    await stack.api_ready(api)
    redis = stack.client()
    predict = f"/v1/models/{version.model}/predict"

    async with api.client() as http:
        # Enqueued in a known order before any worker runs: the first read takes all of them as one batch.
        values = [INT32_MIN, *range(1, MATES + 1)] if poison_at == "first" else [*range(1, MATES + 1), INT32_MIN]
        accepted = []
        for value in values:
            response = await http.post(predict, json={"inputs": [[value]]}, headers=ASYNC)
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        poison = accepted[values.index(INT32_MIN)]
        mates = [i for i in accepted if i != poison]
        entries = await redis.xrange(part.work)
        poison_entry = entries[values.index(INT32_MIN)][0].decode()
        assert len(entries) == MATES + 1

        started = time.monotonic()
        worker = stack.worker([version], **WORKER_ENV)

        def crashes() -> list[dict[str, Any]]:
            return [e for e in worker.events() if e.get("event") == "worker.exited"]

        async def crashed_once() -> bool:
            return len(crashes()) >= 1

        await eventually(crashed_once, 30, "the poisoned batch to crash its worker")

        # Healthy traffic on the same model while the poison keeps killing processes (started after the first
        # crash, so none of it was in the poisoned batch).
        flow: list[asyncio.Task[httpx.Response]] = []
        stop_flow = asyncio.Event()

        async def keep_flowing() -> None:
            k = 0
            while not stop_flow.is_set():
                k += 1
                body = {"inputs": [[100 + k]]}
                flow.append(asyncio.create_task(http.post(predict, json=body, headers={"Prefer": "wait=30"})))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_flow.wait(), 0.25)

        flowing = asyncio.create_task(keep_flowing())

        async def poison_dead() -> bool:
            status: str = (await http.get(f"/v1/predictions/{poison}")).json()["status"]
            return status == "dead_lettered"

        await eventually(poison_dead, 60, "the poison to be dead-lettered")
        dead_after_s = time.monotonic() - started
        after = [
            await http.post(predict, json={"inputs": [[7]]}, headers={"Prefer": "wait=30"}) for _ in range(5)
        ]  # the partition is healthy again
        stop_flow.set()
        await flowing
        flowed: list[httpx.Response] = await asyncio.wait_for(asyncio.gather(*flow), timeout=60)

        async def mates_done() -> bool:
            return len(await stack.results(mates)) == MATES

        await eventually(mates_done, 30, "the batch-mates to finish")
        mate_states = {i: (await http.get(f"/v1/predictions/{i}")).json() for i in mates}
        poison_state = (await http.get(f"/v1/predictions/{poison}")).json()

    # The poison: run exactly max_deliveries times (each run killed a process), then dead-lettered unrun.
    lines = stack.ledger_lines()
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        runs[line["id"]].append(line)
    assert [line["delivery"] for line in runs[poison]] == list(range(1, MAX_DELIVERIES + 1))
    assert len({line["pid"] for line in runs[poison]}) == MAX_DELIVERIES  # three different processes died
    assert poison_state["status"] == "dead_lettered"
    assert poison_state["error"]["message"] == (
        f"delivered {MAX_DELIVERIES + 1} times (max {MAX_DELIVERIES}): worker crashed or timed out"
    )
    dead = await redis.xrange(part.dlq)
    assert len(dead) == 1, [(f[b"origin_id"], f[b"deliveries"]) for _, f in dead]
    fields = dead[0][1]
    assert fields[b"origin_id"].decode() == poison_entry
    assert fields[b"deliveries"] == str(MAX_DELIVERIES + 1).encode()
    assert request_decoder.decode(fields[b"m"]).id == poison

    # Its batch-mates: not dead-lettered, succeeded (values negated).
    assert {i: s["status"] for i, s in mate_states.items()} == dict.fromkeys(mates, "succeeded")
    for i, value in zip(accepted, values, strict=True):
        if i != poison:
            assert mate_states[i]["predictions"][0]["outputs"]["y"] == [-value]

    # Other requests kept flowing while the poison killed processes, and afterwards.
    failed = [r.text[:200] for r in flowed if r.status_code != 200]
    assert [r.status_code for r in flowed] == [200] * len(flowed), failed
    assert [r.status_code for r in after] == [200] * len(after)
    assert flowed, "no healthy request was sent while the poison was live"

    exits = crashes()
    assert [e["exit_code"] for e in exits] == [-signal.SIGFPE] * MAX_DELIVERIES
    assert await stream_state(redis, part) == (0, 0, 1)
    print(
        f"\n[poison {poison_at}] dead-lettered {dead_after_s:.2f} s after the worker started, after "
        f"{len(runs[poison])} runs / {len(exits)} process crashes (SIGFPE); DLQ deliveries field "
        f"{fields[b'deliveries'].decode()}; {len(flowed)} healthy requests during the poison loop, all 200; "
        f"mates' deliveries {[len(runs[i]) for i in mates]} runs each"
    )
