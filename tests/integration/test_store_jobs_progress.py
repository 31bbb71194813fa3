"""Job progress: chunk results once, one event per state change under races, cancel, expiry, stranded chunks."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from test_store_jobs_kit import (
    Sessions,
    count,
    failure,
    new_job,
    reject_chunk,
    stream,
    success,
    valid_chunk,
)

from inferq.contracts.jobs import EventRecord, WebhookSpec
from inferq.errors import JobFinished
from inferq.store.jobs import JobStore
from inferq.store.tables import DeliveryRow, JobChunkRow, JobEventRow

pytestmark = pytest.mark.integration

HOOK = "https://hooks.example.com/inferq"


def types(events: list[EventRecord]) -> list[str]:
    return [record.event.type for record in events]


async def test_chunks_count_once_and_the_job_starts_then_succeeds(
    store: JobStore, sessionmaker: Sessions, tenant: str
) -> None:
    job, _ = await store.create(
        new_job(tenant), stream(valid_chunk(0, [0, 1]), reject_chunk(1, [2]), valid_chunk(2, [3]))
    )
    events = await store.complete_chunk(job.id, 0, outcomes=[success(1), failure()])
    assert types(events) == ["job.started"]
    started = events[0].event
    assert (started.job_id, started.tenant, started.id[:4], len(started.id)) == (job.id, tenant, "msg_", 36)
    assert (started.data.status, started.data.counts.succeeded, started.data.counts.failed) == ("running", 1, 2)
    running = await store.get(tenant, job.id)
    assert (running.status, running.succeeded_rows, running.failed_rows, running.chunks_done) == ("running", 1, 2, 2)
    assert running.started_at is not None
    assert running.finished_at is None

    assert await store.complete_chunk(job.id, 0, outcomes=[success(2), success(2)]) == []  # a rerun
    assert await store.get(tenant, job.id) == running

    events = await store.complete_chunk(job.id, 2, outcomes=[success(0)])
    assert types(events) == ["job.succeeded"]
    done = await store.get(tenant, job.id)
    assert (done.status, done.succeeded_rows, done.failed_rows, done.chunks_done) == ("succeeded", 2, 2, 3)
    assert done.view().progress == 1.0
    assert done.finished_at is not None
    assert done.error is None
    assert events[0].event.data == done.view()
    assert events[0].delivery_id is None  # no webhook
    assert await count(sessionmaker, JobEventRow, job_id=job.id) == 2
    assert await store.complete_chunk(job.id, 2, outcomes=[success(0)]) == []


async def test_a_single_chunk_job_starts_and_finishes_in_one_call(store: JobStore, tenant: str) -> None:
    job, _ = await store.create(new_job(tenant), stream(valid_chunk(0, [0, 1])))
    events = await store.complete_chunk(job.id, 0, outcomes=[failure(), failure()])
    assert types(events) == ["job.started", "job.failed"]
    failed = await store.get(tenant, job.id)
    assert (failed.status, failed.failed_rows) == ("failed", 2)
    assert failed.error is not None
    assert failed.error.code == "inference_failed"


async def test_outcomes_that_do_not_match_the_rows_change_nothing(store: JobStore, tenant: str) -> None:
    job, _ = await store.create(new_job(tenant), stream(valid_chunk(0, [0, 1])))
    with pytest.raises(ValueError, match="2 rows, got 1 outcomes"):
        await store.complete_chunk(job.id, 0, outcomes=[success(1)])
    assert await store.get(tenant, job.id) == job
    assert types(await store.complete_chunk(job.id, 0, outcomes=[success(1), success(1)])) == [
        "job.started",
        "job.succeeded",
    ]


async def test_twenty_racing_completions_write_one_start_and_one_end(
    store: JobStore, sessionmaker: Sessions, tenant: str
) -> None:
    chunks = [valid_chunk(seq, range(seq * 10, seq * 10 + 10)) for seq in range(4)]
    job, _ = await store.create(
        new_job(tenant, webhook=WebhookSpec(url=HOOK, events=("job.started", "completed"))), stream(*chunks)
    )
    calls = [store.complete_chunk(job.id, seq % 4, outcomes=[success(seq)] * 10) for seq in range(20)]
    results = await asyncio.gather(*calls)
    written = [record for events in results for record in events]
    assert sorted(types(written)) == ["job.started", "job.succeeded"]
    done = await store.get(tenant, job.id)
    assert (done.status, done.succeeded_rows, done.failed_rows, done.chunks_done) == ("succeeded", 40, 0, 4)
    assert await count(sessionmaker, JobEventRow, job_id=job.id) == 2
    assert await count(sessionmaker, DeliveryRow, job_id=job.id, status="pending") == 2
    assert all(record.delivery_id is not None for record in written)


async def test_cancel_keeps_partial_results_and_later_results_are_stored_without_a_status_change(
    store: JobStore, sessionmaker: Sessions, tenant: str
) -> None:
    job, _ = await store.create(new_job(tenant), stream(*(valid_chunk(seq, [seq]) for seq in range(3))))
    await store.complete_chunk(job.id, 0, outcomes=[success(0)])
    canceled = await store.cancel(tenant, job.id)
    assert (canceled.status, canceled.succeeded_rows) == ("canceled", 1)
    assert canceled.finished_at is not None
    assert await count(sessionmaker, JobEventRow, job_id=job.id, type="job.canceled") == 1
    with pytest.raises(JobFinished) as caught:
        await store.cancel(tenant, job.id)
    assert caught.value.details["status"] == "canceled"

    assert await store.complete_chunk(job.id, 1, outcomes=[success(1)]) == []  # it was running: kept, no event
    assert await store.skip_chunk(job.id, 2) is True
    assert await store.skip_chunk(job.id, 2) is False
    after = await store.get(tenant, job.id)
    assert (after.status, after.succeeded_rows, after.finished_at) == ("canceled", 2, canceled.finished_at)
    page = await store.results_page(tenant, job.id)
    assert [line.index for line in page.data] == [0, 1]
    assert await count(sessionmaker, JobChunkRow, job_id=job.id, status="skipped") == 1
    assert await count(sessionmaker, JobEventRow, job_id=job.id) == 2  # started, canceled
    assert await store.job_statuses([job.id]) == {job.id: "canceled"}


async def test_jobs_past_their_deadline_expire_once(store: JobStore, tenant: str) -> None:
    short, _ = await store.create(new_job(tenant, window_s=60), stream(valid_chunk(0, [0]), valid_chunk(1, [1])))
    long, _ = await store.create(new_job(tenant, window_s=86_400), stream(valid_chunk(0, [0])))
    await store.complete_chunk(short.id, 0, outcomes=[success(0)])
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    expired = [r.event for r in await store.expire_due(later, limit=10**6) if r.event.tenant == tenant]
    assert [(e.job_id, e.type) for e in expired] == [(short.id, "job.expired")]
    assert expired[0].data.status == "expired"
    job = await store.get(tenant, short.id)
    assert (job.status, job.succeeded_rows) == ("expired", 1)
    assert job.error is not None
    assert job.error.code == "deadline_exceeded"
    assert [r for r in await store.expire_due(later, limit=10**6) if r.event.tenant == tenant] == []
    assert await store.complete_chunk(short.id, 1, outcomes=[success(1)]) == []
    assert (await store.get(tenant, short.id)).status == "expired"
    assert (await store.get(tenant, long.id)).status == "queued"


async def test_stranded_chunks_are_queued_chunks_of_open_jobs_not_enqueued_lately(store: JobStore, tenant: str) -> None:
    job, _ = await store.create(new_job(tenant), stream(*(valid_chunk(seq, [seq]) for seq in range(3))))
    ended, _ = await store.create(new_job(tenant), stream(valid_chunk(0, [0])))
    await store.cancel(tenant, ended.id)

    async def stranded(older_than: dt.datetime) -> list[tuple[str, int]]:
        chunks = await store.stranded_chunks(older_than=older_than, limit=10**6)
        return sorted((c.job_id, c.seq) for c in chunks if c.job_id in (job.id, ended.id))

    now = dt.datetime.now(dt.UTC)
    assert await stranded(now - dt.timedelta(hours=1)) == []  # just created: the API is enqueuing them
    assert await stranded(now + dt.timedelta(seconds=5)) == [(job.id, 0), (job.id, 1), (job.id, 2)]
    assert await store.mark_enqueued(job.id, [(0, "1-0"), (1, "1-1")]) == 2
    await store.complete_chunk(job.id, 1, outcomes=[success(1)])
    assert await store.mark_enqueued(job.id, [(1, "2-0")]) == 0  # done chunks keep their entry
    assert await stranded(now - dt.timedelta(hours=1)) == []
    assert await stranded(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)) == [(job.id, 0), (job.id, 2)]
    assert [c.seq for c in await store.chunks_to_enqueue(job.id)] == [2]
