"""Postgres stopped while a job is submitted: a 503 with ``Retry-After``, nothing on the streams, and a retry
with the same ``Idempotency-Key`` once it is back makes exactly one job. The test has a Postgres of its own
(the run's shared server is never stopped).

The API key is looked up (in Postgres) before it is cached: the tests warm the cache and keep it for the
whole test (``INFERQ_KEY_CACHE_S``), so what meets the outage is the job's own path; a key not yet cached
is refused with a 503 (fail closed)."""

from __future__ import annotations

import asyncio
import secrets
import time

import asyncpg  # type: ignore[import-untyped]
import httpx
import numpy as np

from .harness import OwnPostgres, Stack, eventually, unique
from .models import affine_model
from .test_jobs_kit import (
    WORKER_ENV,
    JobRows,
    TransactionHold,
    assert_each_row_once,
    connect_args,
    job_rows,
    lanes,
    results_jsonl,
    wait_terminal,
)

CHUNK_ROWS = 200
ROWS = 600  # three chunks
API_ENV = {"INFERQ_CHUNK_ROWS": CHUNK_ROWS, "INFERQ_KEY_CACHE_S": 3600}  # a key once looked up outlives the outage


def unavailable(response: httpx.Response) -> tuple[int, str, int]:
    """(status, problem code, Retry-After seconds) of a refusal."""
    return response.status_code, response.json().get("code", ""), int(response.headers.get("retry-after", "0"))


async def test_postgres_stopped_during_submission_503_nothing_enqueued_retry_makes_one_job(
    pg_stack: Stack, own_postgres: OwnPostgres
) -> None:
    """Twice refused — Postgres already down, then stopped mid-transaction (the job and all its chunks
    inserted, the last statement held by a trigger waiting on the test's advisory lock) — then accepted once."""
    stack = pg_stack
    version = await stack.register(affine_model(), name=unique("affine"))
    part = stack.partition(version)
    api = stack.serve(**API_ENV)
    await stack.api_ready(api)
    redis = stack.client()
    uncached = await stack.key_for("default", "jobs")  # never sent before Postgres stops
    key = f"nightly-{secrets.token_hex(4)}"
    inputs, custom_ids = job_rows(ROWS)
    body = {"model": version.key, "inputs": inputs, "custom_ids": custom_ids}
    headers = {"Idempotency-Key": key}

    async with api.client(timeout_s=30) as http, api.client(timeout_s=30, key=uncached) as stranger:
        warm = await http.get("/v1/models")  # the stack's key is looked up, and cached, while Postgres is up

        # 1. Postgres is down when the request comes.
        own_postgres.stop()
        down = await http.post("/v1/jobs", json=body, headers=headers)
        unchecked = await stranger.post("/v1/jobs", json=body, headers=headers)
        down_lanes = await lanes(redis, part)
        own_postgres.start()

        # 2. Postgres stops while the job's transaction is open, at its last statement.
        control = await asyncpg.connect(**connect_args(own_postgres.url))
        hold = TransactionHold(control, name=f"iqf_hold_{secrets.token_hex(4)}")
        await hold.install(table="jobs", condition="OLD.chunks_total = 0 AND NEW.chunks_total > 0", payload="NEW.id")
        await hold.hold()
        posting = asyncio.create_task(http.post("/v1/jobs", json=body, headers=headers))
        blocked: dict[int, str] = {}

        async def in_transaction() -> bool:
            blocked.update(await hold.waiting())
            return bool(blocked)

        await eventually(in_transaction, 20, "the submission's transaction to reach its last statement")
        visible_before_stop = await control.fetchval("SELECT count(*) FROM jobs WHERE idempotency_key = $1", key)
        stopped_at = time.monotonic()
        await asyncio.to_thread(own_postgres.stop)  # fast shutdown: every session ends, the transaction rolls back
        mid = await asyncio.wait_for(posting, timeout=20)
        answered_s = time.monotonic() - stopped_at
        mid_lanes = await lanes(redis, part)
        await asyncio.to_thread(own_postgres.start)
        cleanup = await asyncpg.connect(**connect_args(own_postgres.url))
        try:
            await hold.remove(cleanup)
        finally:
            await cleanup.close()
        with_key_after_failures = await _jobs_with_key(own_postgres.url, key)

        # 3. Back: the same request with the same key makes the job once; again, it is the same job.
        created = await http.post("/v1/jobs", json=body, headers=headers)
        replayed = await http.post("/v1/jobs", json=body, headers=headers)
        enqueued_lanes = await lanes(redis, part)
        worker = stack.worker([version], **WORKER_ENV)
        job_id = created.json()["id"]
        final, _ = await wait_terminal(http, job_id, 60)
        lines = await results_jsonl(http, job_id)
        async with JobRows.opened(own_postgres.url) as rows:
            with_key = await rows.jobs_with_key(key)
            chunks = await rows.chunks(job_id)
            events = [t for t, _ in await rows.events(job_id)]

        async def settled() -> bool:
            return await lanes(redis, part) == (0, 0, 0)

        await eventually(settled, 10, "the job's entries to be acked and deleted")

    assert warm.status_code == 200, warm.text
    assert unavailable(down)[:2] == (503, "service_unavailable"), down.text
    assert unavailable(down)[2] >= 1
    assert unavailable(unchecked)[:2] == (503, "service_unavailable"), unchecked.text  # fail closed, not a pass
    assert down_lanes == (0, 0, 0)
    assert [statement.lstrip().upper()[:11] for statement in blocked.values()] == ["UPDATE JOBS"]
    assert visible_before_stop == 0  # not committed
    assert unavailable(mid)[:2] == (503, "service_unavailable"), mid.text
    assert unavailable(mid)[2] >= 1
    assert answered_s < 10
    assert mid_lanes == (0, 0, 0)
    assert with_key_after_failures == []
    assert created.status_code == 202, created.text
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["id"] == job_id
    assert with_key == [job_id]
    assert enqueued_lanes == (0, ROWS // CHUNK_ROWS, 0)  # the replay enqueued nothing more
    assert [(c.seq, c.status) for c in chunks] == [(s, "done") for s in range(ROWS // CHUNK_ROWS)]
    assert final["status"] == "succeeded"
    assert final["counts"] == {"total": ROWS, "succeeded": ROWS, "failed": 0}
    assert_each_row_once(lines, ROWS)
    by_index = sorted(lines, key=lambda line: line["index"])
    got = np.array([line["prediction"]["outputs"]["y"] for line in by_index], np.float32)
    np.testing.assert_allclose(got, 2 * np.array(inputs, np.float32) + 1, rtol=1e-6)  # y = 2x + 1, row by row
    assert events == ["job.started", "job.succeeded"]
    assert worker.alive()
    assert api.proc.alive()
    print(
        f"\n[jobs: Postgres stopped during submission] down before: {unavailable(down)} ; stopped mid-transaction "
        f"(at {next(iter(blocked.values()))[:40]!r}…): {unavailable(mid)} {answered_s:.2f} s after the stop; "
        f"streams after both: {down_lanes}, {mid_lanes}; retry with the key: 202 then 200, one job ({len(with_key)})"
    )


async def _jobs_with_key(url: str, key: str) -> list[str]:
    async with JobRows.opened(url) as rows:
        return await rows.jobs_with_key(key)


class StoredJobRefused(AssertionError):
    """The API refused a job it had stored (a 503 that says "nothing was stored" for a stored job)."""


async def test_postgres_lost_after_commit_before_enqueue_is_still_a_202(
    pg_stack: Stack, own_postgres: OwnPostgres
) -> None:
    """The job's transaction commits, then Postgres goes away before its chunks are read back for the XADD.

    How the window is hit: the submission's last statement waits (trigger + advisory lock) while the test queues
    an ACCESS EXCLUSIVE lock on ``job_chunks`` behind it; releasing the advisory lock lets the job commit, the
    queued lock is granted at that commit, and the API's next statement (reading the chunks to enqueue) waits
    on it — seen in ``pg_locks`` — with the job committed. Then Postgres is stopped.

    The job is stored and will run (the reconciler enqueues never-enqueued chunks), so the answer must be the
    202 with its id: a 503 says "nothing was stored", and a client without an Idempotency-Key that retries it
    makes a second job that runs every row again.
    """
    stack = pg_stack
    version = await stack.register(affine_model(), name=unique("affine"))
    part = stack.partition(version)
    api = stack.serve(**API_ENV)
    await stack.api_ready(api)
    redis = stack.client()
    inputs, custom_ids = job_rows(ROWS)
    run = unique("run")  # finds the job in Postgres whatever the API answers
    body = {"model": version.key, "inputs": inputs, "custom_ids": custom_ids, "metadata": {"run": run}}

    control = await asyncpg.connect(**connect_args(own_postgres.url))
    locker = await asyncpg.connect(**connect_args(own_postgres.url))
    hold = TransactionHold(control, name=f"iqf_hold_{secrets.token_hex(4)}")
    await hold.install(table="jobs", condition="OLD.chunks_total = 0 AND NEW.chunks_total > 0", payload="NEW.id")
    await hold.hold()
    async with api.client(timeout_s=30) as http:
        posting = asyncio.create_task(http.post("/v1/jobs", json=body))

        async def in_transaction() -> bool:
            return bool(await hold.waiting())

        await eventually(in_transaction, 20, "the submission's transaction to reach its last statement")
        transaction = locker.transaction()
        await transaction.start()
        locking = asyncio.create_task(locker.execute("LOCK TABLE job_chunks IN ACCESS EXCLUSIVE MODE"))

        async def lock_queued() -> bool:  # the submission's INSERTs hold a lock on the table: queued behind them
            return [r["pid"] for r in await control.fetch(_WAITERS)] == [locker.get_server_pid()]

        await eventually(lock_queued, 10, "the table lock to queue behind the submission")
        await hold.release()
        await asyncio.wait_for(locking, timeout=10)  # granted: the submission committed

        async def reading_chunks() -> bool:  # the API's next statement waits on the table lock
            return len(waiters := await control.fetch(_WAITERS)) == 1 and waiters[0]["pid"] != locker.get_server_pid()

        await eventually(reading_chunks, 10, "the API to read the job's chunks back")
        stored = await control.fetch("SELECT id, status FROM jobs WHERE metadata->>'run' = $1", run)
        await asyncio.to_thread(own_postgres.stop)
        response = await asyncio.wait_for(posting, timeout=20)
        lanes_after = await lanes(redis, part)
        await asyncio.to_thread(own_postgres.start)
        await locker.close()
        await control.close()
        cleanup = await asyncpg.connect(**connect_args(own_postgres.url))
        try:
            await hold.remove(cleanup)
        finally:
            await cleanup.close()

        assert [r["status"] for r in stored] == ["queued"]  # committed before Postgres went away
        assert lanes_after == (0, 0, 0)
        if response.status_code != 202:
            raise StoredJobRefused(f"{response.status_code} for a stored job: {response.text}")
        job_id = response.json()["id"]
        assert job_id == stored[0]["id"]

        # Back: the reconciler enqueues the never-enqueued chunks; the job runs once.
        stack.worker([version], **WORKER_ENV)
        stack.tasks(INFERQ_RECONCILE_INTERVAL_S=0.2, INFERQ_STRANDED_AFTER_S=1)
        final, _ = await wait_terminal(http, job_id, 60)
        lines = await results_jsonl(http, job_id)
    assert final["status"] == "succeeded"
    assert_each_row_once(lines, ROWS)


_WAITERS = "SELECT pid FROM pg_locks WHERE locktype = 'relation' AND relation = 'job_chunks'::regclass AND NOT granted"
