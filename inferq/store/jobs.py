"""Durable batch jobs in Postgres: creation, lookups, chunk bookkeeping, transitions, results."""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Select, delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.jobs import (
    OPEN_STATUSES,
    EventRecord,
    JobRecord,
    JobStatus,
    NewChunk,
    NewJob,
    QueuedChunk,
    ResultFilter,
    ResultLine,
    ResultPage,
    RowOutcome,
)
from inferq.errors import Conflict, IdempotencyConflict, JobFinished, JobNotFound
from inferq.store import job_intake, job_progress, job_results
from inferq.store.job_records import check_limit, job_cursor, job_from_row, read_job_cursor
from inferq.store.sessions import statement, transaction
from inferq.store.tables import JobChunkRow, JobRow

_MARK_ENQUEUED = text(
    "UPDATE job_chunks AS c SET entry_id = v.entry_id, enqueued_at = now()"
    " FROM unnest(CAST(:seqs AS integer[]), CAST(:entry_ids AS text[])) AS v(seq, entry_id)"
    " WHERE c.job_id = :job_id AND c.seq = v.seq AND c.status = 'queued'"
)


class JobStore:
    """Jobs, chunks and their outbox events; every method returns contracts, never rows.

    Methods that take a ``tenant`` serve callers: another tenant's job is a ``JobNotFound``, as
    an unknown id is. The others serve workers and the reconciler, which act on any job.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def create(
        self, job: NewJob, chunks: AsyncIterable[NewChunk], *, max_rows: int | None = None
    ) -> tuple[JobRecord, bool]:
        """Store the job and all its chunks in one transaction; ``(job, created)``.

        The same ``(tenant, idempotency_key)`` with the same ``request_sha256`` returns the existing
        job (``created`` false, ``chunks`` not read); with another body it is an ``IdempotencyConflict``.
        """
        for _ in range(3):
            async with transaction(self._sessionmaker) as session:
                row = await job_intake.insert_job(session, job)
                if row is not None:
                    totals = await job_intake.add_chunks(session, job.id, chunks, max_rows=max_rows)
                    return job_from_row(await job_intake.set_totals(session, job.id, totals)), True
                existing = await job_intake.find_idempotent(session, tenant=job.tenant, key=job.idempotency_key)
            if existing is not None:
                if existing.request_sha256 != job.request_sha256:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used with a different request",
                        idempotency_key=job.idempotency_key,
                        job_id=existing.id,
                    )
                return job_from_row(existing), False
        # The key's job kept vanishing between the insert and the read (retention deleting it).
        raise Conflict("the job for this Idempotency-Key changed while creating it; retry", retry=True)

    async def get(self, tenant: str, job_id: str) -> JobRecord:
        """The tenant's job ``job_id``."""
        async with statement(self._sessionmaker) as session:
            row = await session.scalar(select(JobRow).where(JobRow.id == job_id, JobRow.tenant_id == tenant))
        if row is None:
            raise _not_found(job_id)
        return job_from_row(row)

    async def list(
        self,
        tenant: str,
        *,
        status: JobStatus | None = None,
        model: str | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[builtins.list[JobRecord], str | None]:
        """The tenant's jobs, newest first, and the cursor of the next page (``None`` at the end)."""
        stmt = select(JobRow).where(JobRow.tenant_id == tenant)
        if status is not None:
            stmt = stmt.where(JobRow.status == status)
        if model is not None:
            stmt = stmt.where(JobRow.model == model)
        if created_after is not None:
            stmt = stmt.where(JobRow.created_at > created_after)
        if created_before is not None:
            stmt = stmt.where(JobRow.created_at < created_before)
        if cursor is not None:
            stmt = stmt.where(tuple_(JobRow.created_at, JobRow.id) < tuple_(*read_job_cursor(cursor)))
        stmt = stmt.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(check_limit(limit) + 1)
        async with statement(self._sessionmaker) as session:
            rows = builtins.list(await session.scalars(stmt))
        following = job_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return [job_from_row(row) for row in rows[:limit]], following

    async def cancel(self, tenant: str, job_id: str) -> JobRecord:
        """Cancel a queued or running job (results so far are kept); a finished one is ``JobFinished``."""
        async with transaction(self._sessionmaker) as session:
            row = await job_progress.cancel(session, tenant=tenant, job_id=job_id)
        if row is not None:
            return job_from_row(row)
        job = await self.get(tenant, job_id)
        raise JobFinished(f"job {job_id} is already {job.status}", job_id=job_id, status=job.status)

    async def job_statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The status of each known job among ``job_ids`` (workers skip chunks of ended jobs)."""
        async with statement(self._sessionmaker) as session:
            rows = await session.execute(select(JobRow.id, JobRow.status).where(JobRow.id.in_(job_ids)))
            return {job_id: status for job_id, status in rows}

    async def chunks_to_enqueue(
        self, job_id: str, *, after_seq: int = -1, limit: int = 64
    ) -> builtins.list[QueuedChunk]:
        """Up to ``limit`` queued chunks after ``after_seq`` that were never enqueued, by ``seq``."""
        stmt = _queued().where(
            JobChunkRow.job_id == job_id, JobChunkRow.seq > after_seq, JobChunkRow.enqueued_at.is_(None)
        )
        return await self._queued_chunks(stmt.order_by(JobChunkRow.seq).limit(limit))

    async def mark_enqueued(self, job_id: str, entries: Sequence[tuple[int, str]]) -> int:
        """Record each chunk's stream entry id, ``[(seq, entry_id), …]``, in one statement; rows changed."""
        params = {"job_id": job_id, "seqs": [s for s, _ in entries], "entry_ids": [e for _, e in entries]}
        async with statement(self._sessionmaker) as session:
            result = await session.execute(_MARK_ENQUEUED, params)
        return cast(CursorResult[Any], result).rowcount

    async def stranded_chunks(self, *, older_than: dt.datetime, limit: int = 100) -> builtins.list[QueuedChunk]:
        """Queued chunks of open jobs enqueued before ``older_than`` (or never, for a job created before).

        The reconciler re-enqueues those whose stream entry is gone.
        """
        enqueued_before = JobChunkRow.enqueued_at < older_than
        never_enqueued = JobChunkRow.enqueued_at.is_(None) & (JobRow.created_at < older_than)
        stmt = _queued().where(JobRow.status.in_(OPEN_STATUSES), enqueued_before | never_enqueued)
        order = (JobChunkRow.enqueued_at.asc().nulls_first(), JobChunkRow.job_id, JobChunkRow.seq)
        return await self._queued_chunks(stmt.order_by(*order).limit(limit))

    async def complete_chunk(
        self, job_id: str, seq: int, *, outcomes: Sequence[RowOutcome]
    ) -> builtins.list[EventRecord]:
        """Store a chunk's outcomes (aligned with its rows) and move the job on, in one transaction.

        Returns the events written: ``job.started`` and/or the terminal one; ``[]`` for a rerun.
        """
        async with transaction(self._sessionmaker) as session:
            return await job_progress.complete_chunk(session, job_id, seq, outcomes=outcomes)

    async def skip_chunk(self, job_id: str, seq: int) -> bool:
        """Mark a queued chunk of an ended job skipped; ``False`` if it was not queued."""
        async with statement(self._sessionmaker) as session:
            return await job_progress.skip_chunk(session, job_id, seq)

    async def expire_due(self, now: dt.datetime, *, limit: int = 500) -> builtins.list[EventRecord]:
        """Expire open jobs whose deadline has passed at ``now``; their ``job.expired`` events."""
        async with transaction(self._sessionmaker) as session:
            return await job_progress.expire_due(session, now=now, limit=limit)

    async def delete_finished_before(self, when: dt.datetime, *, limit: int = 1000) -> int:
        """Retention: delete up to ``limit`` jobs finished before ``when`` with everything they own."""
        old = select(JobRow.id).where(JobRow.finished_at < when).limit(limit).scalar_subquery()
        async with statement(self._sessionmaker) as session:
            result = await session.execute(delete(JobRow).where(JobRow.id.in_(old)))
        return cast(CursorResult[Any], result).rowcount

    async def results_page(
        self, tenant: str, job_id: str, *, cursor: str | None = None, limit: int = 100, which: ResultFilter = "all"
    ) -> ResultPage:
        """One page of the job's row results (chunk order), ``which`` = all, succeeded or failed rows."""
        await self.get(tenant, job_id)
        async with statement(self._sessionmaker) as session:
            return await job_results.results_page(session, job_id, cursor=cursor, limit=limit, which=which)

    async def iter_results(self, tenant: str, job_id: str, *, which: ResultFilter = "all") -> AsyncIterator[ResultLine]:
        """Every row result, for a JSONL download: await it (``JobNotFound`` comes first), then iterate."""
        await self.get(tenant, job_id)
        return job_results.iter_results(self._sessionmaker, job_id, which=which)

    async def _queued_chunks(self, stmt: Select[*_QueuedRow]) -> builtins.list[QueuedChunk]:
        async with statement(self._sessionmaker) as session:
            rows = (await session.execute(stmt)).all()
        return [
            QueuedChunk(
                job_id=chunk.job_id,
                seq=chunk.seq,
                tenant=tenant,
                model=model,
                version=version,
                rows=chunk.row_count,
                inputs=chunk.inputs or b"",
                deadline_at=deadline_at,
                correlation_id=correlation_id,
                entry_id=chunk.entry_id,
                enqueued_at=chunk.enqueued_at,
            )
            for chunk, tenant, model, version, deadline_at, correlation_id in rows
        ]


_QueuedRow = tuple[JobChunkRow, str, str, int, dt.datetime, str]


def _queued() -> Select[*_QueuedRow]:
    """Queued chunks with what their stream messages need from the job."""
    job = (JobRow.tenant_id, JobRow.model, JobRow.version, JobRow.deadline_at, JobRow.correlation_id)
    return select(JobChunkRow, *job).join(JobRow, JobRow.id == JobChunkRow.job_id).where(JobChunkRow.status == "queued")


def _not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"no job {job_id!r}", job_id=job_id)
