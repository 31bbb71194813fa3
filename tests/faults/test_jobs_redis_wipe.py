"""Redis restarted without its data under batch jobs: Postgres holds every durable fact, so the reconciler
(``inferq tasks``) puts the lost chunks back on their lane and re-schedules the lost webhook retries."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from inferq.streams.tasks import TaskQueue

from .harness import Stack, eventually, unique
from .models import affine_model
from .test_jobs_kit import (
    WEBHOOK_ENV,
    WORKER_ENV,
    JobRows,
    Receiver,
    assert_each_row_once,
    by_event,
    deep_model,
    job,
    lanes,
    results_jsonl,
    runs_by_chunk,
    secret,
    submit,
    wait_terminal,
)

CHUNK_ROWS = 250
API_ENV = {"INFERQ_CHUNK_ROWS": CHUNK_ROWS, "INFERQ_WEBHOOK_ALLOW_PRIVATE": "true"}
STRANDED_AFTER_S = 1.0


async def test_redis_wiped_mid_job_reconciler_finishes_it_without_duplicates(stack: Stack) -> None:
    """A 5,000-row job loses its stream entries (and the consumer group) part-way; the reconciler re-enqueues
    the chunks still queued in Postgres and the job ends ``succeeded`` with every row exactly once."""
    rows_total = 5000
    chunks_total = rows_total // CHUNK_ROWS
    version = await stack.register(deep_model(depth=20), name=unique("deep"))
    part = stack.partition(version)
    api = stack.serve(**API_ENV)
    worker = stack.worker([version], **WORKER_ENV)
    tasks = stack.tasks(**WEBHOOK_ENV, INFERQ_STRANDED_AFTER_S=STRANDED_AFTER_S)
    await stack.api_ready(api)
    await stack.worker_ready(worker, version)
    await stack.tasks_ready(tasks)

    async with api.client() as http, JobRows.opened(stack.database_url) as rows:
        job_id = (await submit(http, version.key, rows_total))["id"]

        async def quarter_done() -> bool:
            done: int = (await job(http, job_id))["counts"]["succeeded"]
            return done >= rows_total // 4

        await eventually(quarter_done, 60, "a quarter of the job to be done")
        queued = [c for c in await rows.chunks(job_id) if c.status == "queued"]
        stack.wipe_redis()
        wiped_at = time.monotonic()
        redis = stack.client()
        # Nothing of the job's entries survived: the entries of its queued chunks are gone for good (a new
        # XADD gets a new id), and so are the ones of chunks already done.
        for chunk in queued:
            assert chunk.entry_id is not None
            assert await redis.xrange(part.bulk, min=chunk.entry_id, max=chunk.entry_id) == []

        final, recovery_s = await wait_terminal(http, job_id, 60)
        lines = await results_jsonl(http, job_id)
        events = [t for t, _ in await rows.events(job_id)]
        chunk_rows = await rows.chunks(job_id)

        async def settled() -> bool:
            return await lanes(redis, part) == (0, 0, 0)

        await eventually(settled, 10, "the re-enqueued entries to be acked and deleted")

    assert len(queued) < chunks_total, "the wipe came before any chunk was done"
    assert final["status"] == "succeeded"
    assert final["counts"] == {"total": rows_total, "succeeded": rows_total, "failed": 0}
    assert_each_row_once(lines, rows_total)
    assert events == ["job.started", "job.succeeded"]
    assert [(c.seq, c.status) for c in chunk_rows] == [(s, "done") for s in range(chunks_total)]
    runs = runs_by_chunk(stack, job_id)
    assert sorted(runs) == list(range(chunks_total))
    requeued = sum(e["count"] for e in tasks.events() if e.get("event") == "reconciler.requeued")
    assert requeued >= len(queued) - 1  # every queued chunk but (at most) the one running during the wipe
    assert worker.alive()
    assert tasks.alive()
    assert api.proc.alive()
    twice = sorted(seq for seq, attempts in runs.items() if len(attempts) > 1)
    print(
        f"\n[jobs: Redis restarted without data mid-job] {rows_total} rows, {chunks_total} chunks, "
        f"{chunks_total - len(queued)} done at the wipe; {requeued} chunk(s) re-enqueued by the reconciler "
        f"(stranded after {STRANDED_AFTER_S:.0f} s, pass every 0.2 s); chunks run twice (result kept once): "
        f"{twice}; recovery restart → job succeeded {recovery_s:.2f} s (from the wipe "
        f"{time.monotonic() - wiped_at:.2f} s incl. checks)"
    )


RETRY_SCALE = 0.6  # attempt 2 waits 5 s x 0.6 = 3 s (±10 %): long enough to wipe Redis under it
JOBS = 3


async def test_redis_wiped_while_webhook_retries_pending_every_due_delivery_happens(stack: Stack) -> None:
    """Six deliveries (3 jobs x started/succeeded) fail their first attempt; their second attempts wait in arq
    (in Redis) when Redis is restarted without data. The reconciler finds them pending and overdue in
    Postgres and schedules them: each event is delivered, under its one ``webhook-id``, never before its time."""
    version = await stack.register(affine_model(), name=unique("affine"))
    api = stack.serve(**API_ENV)
    worker = stack.worker([version], **WORKER_ENV)
    tasks = stack.tasks(**{**WEBHOOK_ENV, "INFERQ_WEBHOOK_RETRY_SCALE": RETRY_SCALE})
    await stack.api_ready(api)
    await stack.worker_ready(worker, version)
    await stack.tasks_ready(tasks)
    failing = True
    queue = TaskQueue(stack.client(), prefix=stack.prefix)

    async with (
        Receiver(lambda _id, _nth: 500 if failing else 204) as receiver,
        api.client() as http,
        JobRows.opened(stack.database_url) as rows,
    ):
        receiver.secret = await secret(api)
        job_ids = [(await submit(http, version.key, 10, webhook=receiver.url))["id"] for _ in range(JOBS)]
        for job_id in job_ids:
            assert (await wait_terminal(http, job_id, 30))[0]["status"] == "succeeded"

        async def first_attempts_failed() -> bool:
            deliveries = [d for j in job_ids for d in await rows.deliveries(j)]
            return len(deliveries) == 2 * JOBS and all((d.status, d.attempts) == ("pending", 1) for d in deliveries)

        await eventually(first_attempts_failed, 20, "every delivery's first attempt to fail")
        before = {d.id: d for j in job_ids for d in await rows.deliveries(j)}
        retries_in_redis = [await queue.known(d, 2) for d in before]
        time_to_first_retry_s = min(d.next_at or 0 for d in before.values()) - time.time()
        stack.wipe_redis()
        failing = False
        after_queue = TaskQueue(stack.client(), prefix=stack.prefix)
        lost = [not await after_queue.known(d, 2) for d in before]

        async def all_delivered() -> bool:
            deliveries = [d for j in job_ids for d in await rows.deliveries(j)]
            return all(d.status != "pending" for d in deliveries)

        await eventually(all_delivered, 30, "every delivery to be made after the wipe")
        await asyncio.sleep(1.0)  # five more reconciler passes: a third attempt would show up now
        after = {d.id: d for j in job_ids for d in await rows.deliveries(j)}
        hooks = [h for j in job_ids for h in receiver.of(j)]
        await after_queue.aclose()
    await queue.aclose()

    # The precondition: every second attempt was waiting in Redis, in the future, and the wipe lost it.
    assert retries_in_redis == [True] * 2 * JOBS
    assert time_to_first_retry_s > 0.3, "a retry was due before the wipe: make RETRY_SCALE larger"
    assert lost == [True] * 2 * JOBS
    assert {(d.status, d.attempts) for d in after.values()} == {("succeeded", 2)}
    grouped = by_event(hooks)
    assert sorted(grouped) == sorted(d.event_id for d in before.values())
    assert Counter(h[0].type for h in grouped.values()) == {"job.started": JOBS, "job.succeeded": JOBS}
    assert {tuple(h.answered for h in attempts) for attempts in grouped.values()} == {(500, 204)}
    assert all(h.verified for h in hooks)
    late = []
    for delivery in before.values():
        due = delivery.next_at
        assert due is not None
        second = grouped[delivery.event_id][1]
        assert second.at >= due - 0.01, "a retry came before its scheduled time"
        late.append(second.at - due)
    assert tasks.alive()
    print(
        f"\n[jobs: Redis restarted without data, webhook retries pending] {2 * JOBS} deliveries, each attempt 2 "
        f"lost with Redis {time_to_first_retry_s:.2f}+ s before it was due; all delivered by the reconciler, "
        f"{max(late):.2f} s late at most (median {sorted(late)[len(late) // 2]:.2f} s; reconciler grace 0.2 s)"
    )


async def test_redis_down_at_submission_job_accepted_and_run_once_it_is_back(stack: Stack) -> None:
    """Redis is down when the job is submitted: the job is committed, so the answer is the 202 (its chunks never
    reached a stream). Redis comes back empty; the reconciler enqueues the never-enqueued chunks."""
    rows_total = 600
    version = await stack.register(affine_model(), name=unique("affine"))
    part = stack.partition(version)
    api = stack.serve(**API_ENV)
    worker = stack.worker([version], **WORKER_ENV)
    tasks = stack.tasks(**WEBHOOK_ENV, INFERQ_STRANDED_AFTER_S=STRANDED_AFTER_S)
    await stack.api_ready(api)
    await stack.worker_ready(worker, version)
    await stack.tasks_ready(tasks)

    async with api.client() as http, JobRows.opened(stack.database_url) as rows:
        stack.redis.kill()
        try:
            job_id = (await submit(http, version.key, rows_total))["id"]
            never_enqueued = [(c.entry_id, c.status) for c in await rows.chunks(job_id)]
        finally:
            stack.redis.start()
        back_at = time.monotonic()
        final, _ = await wait_terminal(http, job_id, 30)
        recovery_s = time.monotonic() - back_at
        lines = await results_jsonl(http, job_id)
        events = [t for t, _ in await rows.events(job_id)]

    chunks_total = -(-rows_total // CHUNK_ROWS)
    assert never_enqueued == [(None, "queued")] * chunks_total
    assert final["status"] == "succeeded"
    assert final["counts"] == {"total": rows_total, "succeeded": rows_total, "failed": 0}
    assert_each_row_once(lines, rows_total)
    assert events == ["job.started", "job.succeeded"]
    assert {len(attempts) for attempts in runs_by_chunk(stack, job_id).values()} == {1}
    assert await lanes(stack.client(), part) == (0, 0, 0)
    print(
        f"\n[jobs: Redis down at submission] 202 with {chunks_total} chunks never enqueued; Redis back (empty) → "
        f"job succeeded {recovery_s:.2f} s (stranded after {STRANDED_AFTER_S:.0f} s, pass every 0.2 s)"
    )
