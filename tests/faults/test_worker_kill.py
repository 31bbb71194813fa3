"""kill -9 a worker in the middle of a batch: every request completes (reclaimed), each has exactly one
terminal result and one announcement, and only the killed batch runs twice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest

from .harness import ReplyMonitor, Stack, eventually, rows, stream_state, unique
from .models import SLOW_WIDTH, slow_model

REQUESTS = 8
ROWS = 64  # per request; max_batch 256 rows → batches of 4 requests, ~1 s each on one ORT thread
WORKER_ENV = {
    "INFERQ_MAX_BATCH": 256,
    "INFERQ_MAX_BATCH_DELAY_MS": 300,  # the concurrent requests form one full batch
    "INFERQ_THREAD_CROSSOVER_ROWS": 1,  # every batch runs in a thread, heartbeating its entries
    "INFERQ_HEARTBEAT_MS": 200,
    "INFERQ_RECLAIM_MIN_IDLE_MS": 1500,
    "INFERQ_RECLAIM_INTERVAL_MS": 200,
    "INFERQ_RESTART_BACKOFF_MS": 100,
    "INFERQ_BLOCK_MS": 200,
}


@pytest.mark.parametrize("kill", ["child", "group"], ids=["child-restarted-by-supervisor", "whole-group-new-worker"])
async def test_kill_9_mid_batch_every_request_completes_exactly_once(stack: Stack, kill: str) -> None:
    version = await stack.register(slow_model(), name=unique("slow"))
    part = stack.partition(version)
    api = stack.serve(INFERQ_WAIT_MAX_S=60)
    worker = stack.worker([version], **WORKER_ENV)
    await stack.api_ready(api)
    await stack.worker_ready(worker, version)
    redis = stack.client()
    predict = f"/v1/models/{version.model}/predict"

    async with api.client() as http, ReplyMonitor(stack) as monitor:
        warm = await http.post(predict, json={"inputs": rows(1, SLOW_WIDTH)}, headers={"Prefer": "wait=30"})
        assert warm.status_code == 200, warm.text  # the model is loaded: the kill hits a run, not a load
        warm_id = warm.json()["id"]

        body = {"inputs": rows(ROWS, SLOW_WIDTH)}
        calls = [
            asyncio.create_task(http.post(predict, json=body, headers={"Prefer": "wait=60"})) for _ in range(REQUESTS)
        ]

        async def batch_running() -> bool:
            return any(line["id"] != warm_id for line in stack.ledger_lines())

        await eventually(batch_running, 30, "the first batch to start")
        await asyncio.sleep(0.2)  # well inside a ~1 s run
        first = next(line for line in stack.ledger_lines() if line["id"] != warm_id)
        killed_pid, killed_batch = first["pid"], first["batch"]
        killed_ids = {line["id"] for line in stack.ledger_lines() if line["batch"] == killed_batch}
        assert not await stack.results(sorted(killed_ids)), "the batch finished before the kill: make it slower"

        killed_at = time.monotonic()
        if kill == "child":
            os.kill(killed_pid, signal.SIGKILL)  # the supervisor restarts the child
        else:
            worker.signal_group(signal.SIGKILL)  # supervisor and child: nobody restarts anything
            await asyncio.to_thread(worker.popen.wait, 10)
            worker = stack.worker([version], **WORKER_ENV)

        responses: list[httpx.Response] = await asyncio.wait_for(asyncio.gather(*calls), timeout=90)
        recovery_s = time.monotonic() - killed_at

        ids = [r.json()["id"] for r in responses]
        assert [r.status_code for r in responses] == [200] * REQUESTS, [r.text[:300] for r in responses]
        assert {r.json()["status"] for r in responses} == {"succeeded"}
        assert len(set(ids)) == REQUESTS

        polled = [(await http.get(f"/v1/predictions/{i}")).json() for i in ids]
        assert [p["status"] for p in polled] == ["succeeded"] * REQUESTS

        async def settled() -> bool:
            return await stream_state(redis, part) == (0, 0, 0)

        await eventually(settled, 20, "every entry to be acked and deleted")
        await asyncio.sleep(1.0)  # a few more reclaim sweeps: a late duplicate would show up now
        announced = {i: monitor.announced[i] for i in ids}

    results = await stack.results(ids)
    assert {i: r.status for i, r in results.items()} == dict.fromkeys(ids, "succeeded")
    assert announced == dict.fromkeys(ids, 1), "a request was announced more than once"
    assert await stream_state(redis, part) == (0, 0, 0)  # nothing left, nothing dead-lettered

    lines = [line for line in stack.ledger_lines() if line["id"] in set(ids)]
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        runs[line["id"]].append(line)
    assert set(runs) == set(ids)
    rerun = {i for i, attempts in runs.items() if len(attempts) > 1}
    assert rerun == killed_ids, f"re-runs {sorted(rerun)} but the killed batch was {sorted(killed_ids)}"
    for i in killed_ids:
        first_run, second_run = runs[i]
        assert (first_run["pid"], first_run["delivery"], first_run["batch"]) == (killed_pid, 1, killed_batch)
        # reclaimed: delivery 2, in another process, alone
        assert second_run["pid"] != killed_pid
        assert (second_run["delivery"], second_run["rows"]) == (2, ROWS)
    for i in set(ids) - killed_ids:
        assert len(runs[i]) == 1

    if kill == "child":
        exits = [e for e in worker.events() if e.get("event") == "worker.exited"]
        assert [e["exit_code"] for e in exits] == [-signal.SIGKILL]
    deliveries = Counter(line["delivery"] for line in lines)
    print(
        f"\n[kill -9 {kill}] killed batch {killed_batch}: {len(killed_ids)} of {REQUESTS} requests "
        f"({len(killed_ids) * ROWS} rows); recovery kill → all {REQUESTS} answered: {recovery_s:.2f} s "
        f"(reclaim min-idle 1.5 s); runs per delivery {dict(sorted(deliveries.items()))}"
    )
