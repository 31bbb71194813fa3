"""Job creation and lookups: counts, streaming 50,000 rows, idempotency, tenancy, listing, caps, retention."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from test_store_jobs_kit import Sessions, Tenants, count, new_job, reject_chunk, stream, success, valid_chunk

from inferq.contracts.jobs import NewChunk
from inferq.errors import IdempotencyConflict, InvalidInput, JobFinished, JobNotFound, PayloadTooLarge
from inferq.store.jobs import JobStore
from inferq.store.tables import JobChunkRow, JobEventRow, JobRow

pytestmark = pytest.mark.integration


async def test_create_counts_rows_chunks_and_rejected_rows(store: JobStore, tenant: str) -> None:
    chunks = stream(valid_chunk(0, range(256)), reject_chunk(1, [256, 257]), valid_chunk(2, range(258, 268)))
    job, created = await store.create(new_job(tenant, window_s=600), chunks)
    assert created
    assert job.id.startswith("job_")
    assert len(job.id) == 36
    assert (job.tenant, job.model, job.version, job.status) == (tenant, "iris", 1, "queued")
    assert (job.total_rows, job.succeeded_rows, job.failed_rows) == (268, 0, 2)
    assert (job.chunks_total, job.chunks_done) == (3, 1)
    assert job.deadline_at - job.created_at == dt.timedelta(seconds=600)
    assert (job.started_at, job.finished_at, job.error) == (None, None, None)
    assert (job.correlation_id, job.metadata) == ("corr-1", {"batch": "nightly"})
    assert await store.get(tenant, job.id) == job
    view = job.view()
    assert (view.counts.total, view.counts.failed, view.progress) == (268, 2, round(2 / 268, 4))


async def test_a_50000_row_job_is_streamed_in_and_enqueued_page_by_page(
    store: JobStore, sessionmaker: Sessions, tenant: str
) -> None:
    produced: list[int] = []

    async def chunks() -> AsyncIterator[NewChunk]:
        for seq, start in enumerate(range(0, 50_000, 256)):
            produced.append(seq)
            yield valid_chunk(seq, range(start, min(start + 256, 50_000)))

    job, created = await store.create(new_job(tenant), chunks(), max_rows=50_000)
    assert created
    assert len(produced) == 196
    assert (job.total_rows, job.chunks_total, job.chunks_done, job.failed_rows) == (50_000, 196, 0, 0)
    assert await count(sessionmaker, JobChunkRow, job_id=job.id, status="queued") == 196

    pages, after = [], -1
    while page := await store.chunks_to_enqueue(job.id, after_seq=after, limit=64):
        pages.append(len(page))
        after = page[-1].seq
        assert await store.mark_enqueued(job.id, [(c.seq, f"1700000000000-{c.seq}") for c in page]) == len(page)
    assert pages == [64, 64, 64, 4]
    assert await store.chunks_to_enqueue(job.id) == []
    first = await store.stranded_chunks(older_than=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1), limit=10**6)
    mine = sorted((c for c in first if c.job_id == job.id), key=lambda c: c.seq)
    assert [c.seq for c in mine] == list(range(196))
    assert (mine[0].entry_id, mine[0].inputs, mine[-1].rows) == ("1700000000000-0", b"inputs-0", 50_000 - 195 * 256)
    assert (mine[0].tenant, mine[0].model, mine[0].version, mine[0].correlation_id) == (tenant, "iris", 1, "corr-1")


async def test_same_key_and_body_returns_the_existing_job_without_reading_the_rows(
    store: JobStore, tenant: str
) -> None:
    first, created = await store.create(new_job(tenant, key="k1"), stream(valid_chunk(0, [0, 1])))
    consumed: list[int] = []
    again, created_again = await store.create(new_job(tenant, key="k1"), stream(valid_chunk(0, [0]), consumed=consumed))
    assert (created, created_again) == (True, False)
    assert again == first
    assert consumed == []


async def test_same_key_with_another_body_is_a_conflict_but_another_tenant_may_use_it(
    store: JobStore, sessionmaker: Sessions, tenant: str, tenants: Tenants
) -> None:
    first, _ = await store.create(new_job(tenant, key="k2", body=b"a"), stream(valid_chunk(0, [0])))
    with pytest.raises(IdempotencyConflict) as caught:
        await store.create(new_job(tenant, key="k2", body=b"b"), stream(valid_chunk(0, [0])))
    assert caught.value.details["job_id"] == first.id
    other = await tenants.new()
    theirs, created = await store.create(new_job(other, key="k2", body=b"b"), stream(valid_chunk(0, [0])))
    assert created
    assert theirs.id != first.id
    assert await count(sessionmaker, JobRow, idempotency_key="k2") == 2


async def test_ten_concurrent_identical_submissions_make_exactly_one_job(
    store: JobStore, sessionmaker: Sessions, tenant: str
) -> None:
    async def slow_chunks() -> AsyncIterator[NewChunk]:
        for seq in range(3):
            await asyncio.sleep(0.02)  # the first submission holds its key while the others arrive
            yield valid_chunk(seq, [seq])

    results = await asyncio.gather(*(store.create(new_job(tenant, key="same"), slow_chunks()) for _ in range(10)))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert {job.total_rows for job, _ in results} == {3}
    assert await count(sessionmaker, JobRow, tenant_id=tenant) == 1
    assert await count(sessionmaker, JobChunkRow, job_id=results[0][0].id) == 3


async def test_a_failed_creation_stores_nothing(store: JobStore, sessionmaker: Sessions, tenant: str) -> None:
    async def broken() -> AsyncIterator[NewChunk]:
        for seq in range(40):  # past two insert batches
            yield valid_chunk(seq, [seq])
        raise RuntimeError("upload cut off")

    with pytest.raises(RuntimeError, match="cut off"):
        await store.create(new_job(tenant), broken())
    with pytest.raises(PayloadTooLarge):
        await store.create(new_job(tenant), stream(valid_chunk(0, range(6)), valid_chunk(1, range(6, 11))), max_rows=10)
    with pytest.raises(InvalidInput, match="at least one row"):
        await store.create(new_job(tenant), stream())
    bad = NewChunk(seq=0, rows=2, indexes=(0,), custom_ids=(None,), inputs=b"x")
    with pytest.raises(ValueError, match="one entry per row"):
        await store.create(new_job(tenant), stream(bad))
    both = NewChunk(seq=0, rows=1, indexes=(0,), custom_ids=(None,), inputs=b"x", outcomes=(success(1),))
    with pytest.raises(ValueError, match="not both"):
        await store.create(new_job(tenant), stream(both))
    assert await count(sessionmaker, JobRow, tenant_id=tenant) == 0
    # The idempotency key of a failed creation stays free.
    job, created = await store.create(new_job(tenant, key="retry"), stream(valid_chunk(0, [0])))
    assert created
    assert job.total_rows == 1


async def test_another_tenants_job_is_not_found(store: JobStore, tenant: str, tenants: Tenants) -> None:
    job, _ = await store.create(new_job(tenant), stream(valid_chunk(0, [0])))
    other = await tenants.new()
    for owner, job_id in ((other, job.id), (tenant, "job_" + "0" * 32)):
        with pytest.raises(JobNotFound):
            await store.get(owner, job_id)
        with pytest.raises(JobNotFound):
            await store.cancel(owner, job_id)
        with pytest.raises(JobNotFound):
            await store.results_page(owner, job_id)
        with pytest.raises(JobNotFound):
            await store.iter_results(owner, job_id)
    assert await store.list(other) == ([], None)
    assert (await store.get(tenant, job.id)).status == "queued"


async def test_listing_pages_newest_first_with_filters(store: JobStore, tenant: str) -> None:
    ids = []
    for n in range(5):
        job, _ = await store.create(new_job(tenant, model="iris" if n % 2 else "wine"), stream(valid_chunk(0, [0])))
        ids.append(job.id)
    await store.cancel(tenant, ids[1])
    seen, cursor = [], None
    while True:
        page, cursor = await store.list(tenant, cursor=cursor, limit=2)
        seen.append([job.id for job in page])
        if cursor is None:
            break
    assert seen == [[ids[4], ids[3]], [ids[2], ids[1]], [ids[0]]]
    assert [j.id for j in (await store.list(tenant, model="iris"))[0]] == [ids[3], ids[1]]
    assert [j.id for j in (await store.list(tenant, status="canceled"))[0]] == [ids[1]]
    middle = await store.get(tenant, ids[2])
    assert [j.id for j in (await store.list(tenant, created_before=middle.created_at))[0]] == [ids[1], ids[0]]
    assert [j.id for j in (await store.list(tenant, created_after=middle.created_at))[0]] == [ids[4], ids[3]]
    with pytest.raises(InvalidInput, match="cursor"):
        await store.list(tenant, cursor="not-a-cursor")
    with pytest.raises(InvalidInput, match="limit"):
        await store.list(tenant, limit=0)


async def test_a_job_whose_rows_were_all_rejected_fails_at_once_with_one_event(
    store: JobStore, sessionmaker: Sessions, tenant: str
) -> None:
    job, _ = await store.create(new_job(tenant), stream(reject_chunk(0, [0, 1]), reject_chunk(1, [2])))
    assert (job.status, job.total_rows, job.failed_rows, job.chunks_done) == ("failed", 3, 3, 2)
    assert job.finished_at is not None
    assert job.started_at is None
    assert job.error is not None
    assert job.error.code == "invalid_input"
    assert await count(sessionmaker, JobEventRow, job_id=job.id) == 1
    assert await count(sessionmaker, JobEventRow, job_id=job.id, type="job.failed") == 1
    with pytest.raises(JobFinished):
        await store.cancel(tenant, job.id)


async def test_statuses_and_retention(store: JobStore, sessionmaker: Sessions, tenant: str) -> None:
    done, _ = await store.create(new_job(tenant), stream(valid_chunk(0, [0])))
    await store.complete_chunk(done.id, 0, outcomes=[success(1)])
    open_job, _ = await store.create(new_job(tenant), stream(valid_chunk(0, [0])))
    statuses = await store.job_statuses([done.id, open_job.id, "job_unknown"])
    assert statuses == {done.id: "succeeded", open_job.id: "queued"}

    assert await store.delete_finished_before(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)) == 0
    assert await store.job_statuses([done.id]) == {done.id: "succeeded"}
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    async with sessionmaker() as session:  # the database is shared: other tests' finished jobs go too
        finished = await session.scalar(select(func.count()).where(JobRow.finished_at < when))
    assert await store.delete_finished_before(when, limit=10**6) == finished
    assert await store.job_statuses([done.id, open_job.id]) == {open_job.id: "queued"}
    assert await count(sessionmaker, JobChunkRow, job_id=done.id) == 0
    assert await count(sessionmaker, JobEventRow, job_id=done.id) == 0
