"""Job state changes on an open transaction: chunk results, start, completion, cancel and expiry.

Every transition is one conditional UPDATE (``WHERE status IN …``); only the transaction whose
UPDATE returned the row writes the outbox event, so each state change has exactly one event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import ReturningUpdate

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.jobs import OPEN_STATUSES, EventRecord, RowOutcome, outcomes_encoder
from inferq.store import outbox
from inferq.store.job_records import to_json
from inferq.store.tables import JobChunkRow, JobRow

_EXPIRED = ErrorInfo(code="deadline_exceeded", message="the completion window ended before every row ran")


async def complete_chunk(
    session: AsyncSession, job_id: str, seq: int, *, outcomes: Sequence[RowOutcome]
) -> list[EventRecord]:
    """Store a chunk's outcomes once, count them, and move the job on (started, finished).

    A chunk already done or skipped changes nothing (``[]``): reruns of a redelivered chunk are
    harmless. A canceled or expired job keeps the results but does not change status.
    """
    failed = sum(outcome.error is not None for outcome in outcomes)
    stored = (
        update(JobChunkRow)
        .where(JobChunkRow.job_id == job_id, JobChunkRow.seq == seq, JobChunkRow.status == "queued")
        .values(
            status="done",
            outputs=outcomes_encoder.encode(tuple(outcomes)),
            succeeded=len(outcomes) - failed,
            failed=failed,
            finished_at=func.now(),
        )
        .returning(JobChunkRow.row_count)
    )
    row_count = await session.scalar(stored)
    if row_count is None:
        return []
    if row_count != len(outcomes):
        raise ValueError(f"chunk {seq} of {job_id} has {row_count} rows, got {len(outcomes)} outcomes")
    counted = _changed(
        job_id,
        succeeded_rows=JobRow.succeeded_rows + len(outcomes) - failed,
        failed_rows=JobRow.failed_rows + failed,
        chunks_done=JobRow.chunks_done + 1,
    )
    job = (await session.scalars(counted)).one()
    events: list[EventRecord | None] = []
    if job.status == "queued":
        started = await session.scalar(_changed(job_id, status="running", started_at=func.now()).where(_is("queued")))
        if started is not None:
            job = started
            events.append(await outbox.emit(session, job, "job.started"))
    if job.status in OPEN_STATUSES and job.chunks_done == job.chunks_total:
        events.append(await _finish(session, job))
    return [event for event in events if event is not None]


async def _finish(session: AsyncSession, job: JobRow) -> EventRecord | None:
    """The last chunk is in: succeeded with at least one row that did, else failed."""
    values: dict[str, Any] = {"status": "succeeded" if job.succeeded_rows else "failed", "finished_at": func.now()}
    if not job.succeeded_rows:
        message = f"no row succeeded: {job.failed_rows} of {job.total_rows} failed (see errors.jsonl)"
        values["error"] = to_json(ErrorInfo(code="inference_failed", message=message))
    stmt = _changed(job.id, **values).where(_is(*OPEN_STATUSES), JobRow.chunks_done == JobRow.chunks_total)
    finished = await session.scalar(stmt)
    if finished is None:
        return None
    return await outbox.emit(session, finished, "job.succeeded" if job.succeeded_rows else "job.failed")


async def skip_chunk(session: AsyncSession, job_id: str, seq: int) -> bool:
    """Mark a queued chunk skipped (its job ended first); ``False`` if it was not queued."""
    stmt = (
        update(JobChunkRow)
        .where(JobChunkRow.job_id == job_id, JobChunkRow.seq == seq, JobChunkRow.status == "queued")
        .values(status="skipped", finished_at=func.now())
        .returning(JobChunkRow.seq)
    )
    return await session.scalar(stmt) is not None


async def cancel(session: AsyncSession, *, tenant: str, job_id: str) -> JobRow | None:
    """Cancel a queued or running job of ``tenant``, with its event; ``None`` if there is none to cancel."""
    stmt = _changed(job_id, status="canceled", finished_at=func.now()).where(
        JobRow.tenant_id == tenant, _is(*OPEN_STATUSES)
    )
    row = await session.scalar(stmt)
    if row is not None:
        await outbox.emit(session, row, "job.canceled")
    return row


async def expire_due(session: AsyncSession, *, now: dt.datetime, limit: int) -> list[EventRecord]:
    """Expire up to ``limit`` open jobs whose deadline is at or before ``now``, with their events.

    NOTE: ``SKIP LOCKED``: a job busy in another transaction is left for the next round.
    """
    due = (
        select(JobRow.id)
        .where(_is(*OPEN_STATUSES), JobRow.deadline_at <= now)
        .order_by(JobRow.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(JobRow)
        .where(JobRow.id.in_(due.scalar_subquery()), _is(*OPEN_STATUSES))
        .values(status="expired", finished_at=func.now(), error=to_json(_EXPIRED))
        .returning(JobRow)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    expired = list(await session.scalars(stmt))
    events = [await outbox.emit(session, row, "job.expired") for row in expired]
    return [event for event in events if event is not None]


def _is(*statuses: str) -> ColumnElement[bool]:
    return JobRow.status.in_(statuses)


def _changed(job_id: str, **values: Any) -> ReturningUpdate[JobRow]:
    """``UPDATE jobs SET … WHERE id = job_id RETURNING *``, refreshing the session's copy of the row."""
    return (
        update(JobRow)
        .where(JobRow.id == job_id)
        .values(**values)
        .returning(JobRow)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
