"""Workers paused (SIGSTOP) while 200 requests with a 300 ms deadline arrive: after SIGCONT every one of
them ends ``expired`` and none is ever run."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import httpx

from .harness import Stack, eventually, stream_state, unique
from .models import affine_model

REQUESTS = 200
PROCESSES = 2


async def test_paused_workers_never_run_requests_past_their_deadline(stack: Stack) -> None:
    version = await stack.register(affine_model(), name=unique("paused"))
    part = stack.partition(version)
    api = stack.serve()
    worker = stack.worker(
        [version], processes=PROCESSES, INFERQ_RECLAIM_MIN_IDLE_MS=1000, INFERQ_RECLAIM_INTERVAL_MS=200
    )
    await stack.api_ready(api)
    await stack.worker_ready(worker, version, processes=PROCESSES)
    redis = stack.client()
    predict = f"/v1/models/{version.model}/predict"
    children = worker.children()
    assert len(children) == PROCESSES

    async with api.client() as http:
        warm = await http.post(predict, json={"inputs": [[1, 2, 3, 4]]}, headers={"Prefer": "wait=10"})
        assert warm.status_code == 200, warm.text

        for pid in children:
            os.kill(pid, signal.SIGSTOP)
        headers = {"Cancel-After": "300ms", "Prefer": "wait=1"}
        sent = time.monotonic()
        calls = [
            asyncio.create_task(http.post(predict, json={"inputs": [[k, k, k, k]]}, headers=headers))
            for k in range(REQUESTS)
        ]
        await asyncio.sleep(1.0 - (time.monotonic() - sent))
        for pid in children:
            os.kill(pid, signal.SIGCONT)
        responses: list[httpx.Response] = await asyncio.wait_for(asyncio.gather(*calls), timeout=60)
        answered_s = time.monotonic() - sent

        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {202, 504}, {r.status_code: r.text[:200] for r in responses}
        for response in responses:
            if response.status_code == 504:  # resumed workers expired it while its caller was still held
                assert response.json()["code"] == "deadline_exceeded"
        ids = [r.json()["id"] if r.status_code == 202 else r.json()["details"]["id"] for r in responses]
        assert len(set(ids)) == REQUESTS

        async def all_expired() -> bool:
            states = [(await http.get(f"/v1/predictions/{i}")).json()["status"] for i in ids]
            return states == ["expired"] * REQUESTS

        await eventually(all_expired, 30, "all 200 requests to report expired")

        async def settled() -> bool:
            return await stream_state(redis, part) == (0, 0, 0)

        await eventually(settled, 20, "the resumed workers to settle every entry")

    results = await stack.results(ids)
    assert {r.status for r in results.values()} == {"expired"}
    assert len(results) == REQUESTS  # stored by the workers, not only inferred by GET
    ran = {line["id"] for line in stack.ledger_lines()}
    assert ran == {warm.json()["id"]}, f"{len(ran & set(ids))} expired requests were run"
    print(
        f"\n[paused workers] {REQUESTS} requests, Cancel-After 300ms, Prefer wait=1, SIGCONT after 1 s: "
        f"HTTP {dict(statuses)} in {answered_s:.2f} s; all {REQUESTS} expired; 0 runs in the ledger"
    )
