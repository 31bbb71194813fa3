"""Job results: chunk order, expansion with custom_ids/indexes/lines, filters, cursor pages, streamed lines."""

from __future__ import annotations

import pytest
from test_store_jobs_kit import failure, new_job, reject_chunk, stream, success, valid_chunk

from inferq.contracts.jobs import JobRecord, ResultFilter, ResultLine
from inferq.errors import InvalidInput
from inferq.store.jobs import JobStore

pytestmark = pytest.mark.integration


async def everything(store: JobStore, tenant: str, job_id: str, *, which: ResultFilter, limit: int) -> list[ResultLine]:
    """All results, page by page."""
    lines: list[ResultLine] = []
    page = await store.results_page(tenant, job_id, limit=limit, which=which)
    lines.extend(page.data)
    while page.next_cursor is not None:
        assert len(page.data) == limit
        page = await store.results_page(tenant, job_id, cursor=page.next_cursor, limit=limit, which=which)
        lines.extend(page.data)
    return lines


async def streamed(store: JobStore, tenant: str, job_id: str, *, which: ResultFilter) -> list[ResultLine]:
    return [line async for line in await store.iter_results(tenant, job_id, which=which)]


@pytest.fixture
async def mixed(store: JobStore, tenant: str) -> JobRecord:
    """Rows 0-5: chunk 0 = rows 0, 1, 3 (row 1 fails), chunk 1 = row 2 rejected at line 3, chunk 2 = rows 4, 5."""
    chunks = stream(
        valid_chunk(0, [0, 1, 3], custom_ids=["a", None, "d"]),
        reject_chunk(1, [2], lines=[3]),
        valid_chunk(2, [4, 5]),
    )
    job, _ = await store.create(new_job(tenant), chunks)
    await store.complete_chunk(job.id, 0, outcomes=[success(7), failure("nan in row"), success(8)])
    return job


async def test_results_expand_each_finished_chunk_in_seq_order(store: JobStore, tenant: str, mixed: JobRecord) -> None:
    page = await store.results_page(tenant, mixed.id)
    assert page.next_cursor is None
    assert [(r.custom_id, r.index, r.line, r.status) for r in page.data] == [
        ("a", 0, None, "succeeded"),
        (None, 1, None, "failed"),
        ("d", 3, None, "succeeded"),
        ("row-2", 2, 3, "failed"),
    ]
    first, second = page.data[0], page.data[1]
    assert first.prediction is not None
    assert (first.prediction.label, first.error) == (7, None)
    assert second.error is not None
    assert (second.error.code, second.error.message) == ("inference_failed", "nan in row")
    assert page.data[3].error is not None
    assert page.data[3].error.code == "invalid_input"

    await store.complete_chunk(mixed.id, 2, outcomes=[success(4), success(5)])
    assert [r.index for r in await streamed(store, tenant, mixed.id, which="all")] == [0, 1, 3, 2, 4, 5]
    assert [r.index for r in await streamed(store, tenant, mixed.id, which="succeeded")] == [0, 3, 4, 5]
    assert [r.index for r in await streamed(store, tenant, mixed.id, which="failed")] == [1, 2]
    for which in ("all", "succeeded", "failed"):
        expected = await streamed(store, tenant, mixed.id, which=which)
        assert await everything(store, tenant, mixed.id, which=which, limit=1) == expected
        assert await everything(store, tenant, mixed.id, which=which, limit=2) == expected


async def test_pages_and_downloads_span_many_read_batches(store: JobStore, tenant: str) -> None:
    job, _ = await store.create(new_job(tenant), stream(*(valid_chunk(s, range(s * 3, s * 3 + 3)) for s in range(40))))
    for seq in range(40):
        outcomes = [failure() if (seq * 3 + i) % 5 == 0 else success(i) for i in range(3)]
        await store.complete_chunk(job.id, seq, outcomes=outcomes)
    lines = await streamed(store, tenant, job.id, which="all")
    assert [r.index for r in lines] == list(range(120))
    assert [r.custom_id for r in lines[:2]] == ["row-0", "row-1"]
    assert [r.index for r in lines if r.status == "failed"] == list(range(0, 120, 5))
    assert await everything(store, tenant, job.id, which="all", limit=7) == lines
    failed = await everything(store, tenant, job.id, which="failed", limit=5)
    assert [r.index for r in failed] == list(range(0, 120, 5))
    assert await everything(store, tenant, job.id, which="succeeded", limit=1000) == [
        r for r in lines if r.status == "succeeded"
    ]


async def test_a_job_with_no_finished_chunk_has_no_results_and_bad_cursors_are_rejected(
    store: JobStore, tenant: str
) -> None:
    job, _ = await store.create(new_job(tenant), stream(valid_chunk(0, [0])))
    page = await store.results_page(tenant, job.id)
    assert (page.data, page.next_cursor) == ((), None)
    assert await streamed(store, tenant, job.id, which="all") == []
    with pytest.raises(InvalidInput, match="cursor"):
        await store.results_page(tenant, job.id, cursor="%%%")
    with pytest.raises(InvalidInput, match="limit"):
        await store.results_page(tenant, job.id, limit=1001)
