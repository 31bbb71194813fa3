"""One worker (max_batch 1) blocked on a slow request, admission limit Q, Q+k concurrent requests: the
overflow is rejected at once with 503 + Retry-After and never enqueued; what was admitted runs once.

The limit bounds the stream's length, i.e. undelivered + unacknowledged entries (design.md, "Streams and
messages"), so the running request holds one of the Q places: Q - 1 are accepted and k + 1 rejected.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from .harness import Stack, eventually, rows, stream_state, unique
from .models import SLOW_WIDTH, slow_model

LIMIT = 8  # Q
EXTRA = 4  # k
SLOW_ROWS = 512  # ~1.5 s on one ORT thread


async def test_admission_limit_rejects_exactly_the_overflow_with_503(stack: Stack) -> None:
    version = await stack.register(slow_model(), name=unique("admit"))
    part = stack.partition(version)
    api = stack.serve(INFERQ_ADMISSION_LIMIT=LIMIT)
    worker = stack.worker(
        [version], INFERQ_MAX_BATCH=1, INFERQ_THREAD_CROSSOVER_ROWS=1, INFERQ_HEARTBEAT_MS=200,
        INFERQ_RECLAIM_MIN_IDLE_MS=5000,
    )  # fmt: skip
    await stack.api_ready(api)
    await stack.worker_ready(worker, version)
    redis = stack.client()
    predict = f"/v1/models/{version.model}/predict"
    one_row = {"inputs": rows(1, SLOW_WIDTH)}

    async with api.client() as http:
        warm = await http.post(predict, json=one_row, headers={"Prefer": "wait=30"})
        assert warm.status_code == 200, warm.text

        slow = asyncio.create_task(
            http.post(predict, json={"inputs": rows(SLOW_ROWS, SLOW_WIDTH)}, headers={"Prefer": "wait=30"})
        )

        async def slow_running() -> bool:
            return len(stack.ledger_lines()) == 2  # the warm-up, then the slow request

        await eventually(slow_running, 30, "the slow request to start running")
        # The running request is unacknowledged, so it is part of the stream's length, which is what
        # admission limits (design.md: "a stream's length is exactly its undelivered + unacknowledged work").
        backlog_before = (await stream_state(redis, part))[0]
        assert backlog_before == 1

        burst_started = time.monotonic()
        responses: list[httpx.Response] = await asyncio.gather(
            *(http.post(predict, json=one_row, headers={"Prefer": "respond-async"}) for _ in range(LIMIT + EXTRA))
        )
        burst_s = time.monotonic() - burst_started
        blocked_throughout = not slow.done()
        backlog_after = (await stream_state(redis, part))[0]

        accepted = [r for r in responses if r.status_code == 202]
        rejected = [r for r in responses if r.status_code == 503]
        assert blocked_throughout, "the slow request finished during the burst: make it slower"
        assert len(accepted) + len(rejected) == LIMIT + EXTRA, [r.status_code for r in responses]
        assert len(accepted) == LIMIT - backlog_before
        assert len(rejected) == EXTRA + backlog_before
        assert backlog_after == LIMIT
        for response in rejected:
            problem = response.json()
            assert problem["code"] == "overloaded"
            assert problem["details"]["limit"] == LIMIT
            assert int(response.headers["Retry-After"]) >= 1

        assert (await slow).status_code == 200
        ids = [r.json()["id"] for r in accepted]

        async def admitted_done() -> bool:
            return len(await stack.results(ids)) == len(ids)

        await eventually(admitted_done, 30, "the admitted requests to finish")
        states = [(await http.get(f"/v1/predictions/{i}")).json()["status"] for i in ids]

    assert states == ["succeeded"] * len(ids)
    ran = [line["id"] for line in stack.ledger_lines()]
    assert sorted(ran[2:]) == sorted(ids)  # each admitted request ran once; nothing rejected ever ran
    assert await stream_state(redis, part) == (0, 0, 0)
    print(
        f"\n[admission] limit Q={LIMIT}, 1 request in flight, Q+k={LIMIT + EXTRA} concurrent: "
        f"{len(accepted)} accepted, {len(rejected)} rejected 503 (Retry-After "
        f"{sorted({r.headers['Retry-After'] for r in rejected})}) in {burst_s * 1000:.0f} ms"
    )
