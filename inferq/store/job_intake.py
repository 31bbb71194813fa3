"""Job intake on an open transaction: the job row, its streamed chunks in batches, and the totals."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.jobs import NewChunk, NewJob, outcomes_encoder
from inferq.errors import InvalidInput, PayloadTooLarge
from inferq.store import outbox
from inferq.store.job_records import to_json
from inferq.store.tables import JobChunkRow, JobRow

# NOTE: chunks are inserted 16 to a multi-row INSERT: few round trips, and a 200 MB upload is
# never held in memory (only the batch being written is).
BATCH_CHUNKS = 16


@dataclass
class Totals:
    """What the chunks of a job add up to."""

    rows: int = 0
    succeeded: int = 0
    failed: int = 0
    chunks: int = 0
    done: int = 0


async def insert_job(session: AsyncSession, job: NewJob) -> JobRow | None:
    """Insert the job row (queued, no chunks yet); ``None`` when its idempotency key is taken.

    NOTE: a concurrent insert of the same ``(tenant, key)`` waits on the unique index until the
    first transaction ends, then does nothing (committed) or goes ahead (rolled back).
    """
    webhook = job.webhook
    stmt = (
        pg_insert(JobRow)
        .values(
            id=job.id,
            tenant_id=job.tenant,
            model=job.model,
            version=job.version,
            idempotency_key=job.idempotency_key,
            request_sha256=job.request_sha256,
            webhook_url=None if webhook is None else webhook.url,
            webhook_events=[] if webhook is None else list(webhook.events),
            completion_window_s=job.completion_window_s,
            deadline_at=func.now() + dt.timedelta(seconds=job.completion_window_s),
            correlation_id=job.correlation_id,
            meta=job.metadata,
        )
        .on_conflict_do_nothing(index_elements=[JobRow.tenant_id, JobRow.idempotency_key])
        .returning(JobRow)
    )
    return await session.scalar(stmt)


async def find_idempotent(session: AsyncSession, *, tenant: str, key: str | None) -> JobRow | None:
    """The tenant's job created with ``Idempotency-Key: key``."""
    if key is None:
        return None
    return await session.scalar(select(JobRow).where(JobRow.tenant_id == tenant, JobRow.idempotency_key == key))


async def add_chunks(
    session: AsyncSession, job_id: str, chunks: AsyncIterable[NewChunk], *, max_rows: int | None
) -> Totals:
    """Insert every chunk, batch by batch, and add them up; past ``max_rows`` rows → ``PayloadTooLarge``."""
    totals = Totals()
    batch: list[dict[str, Any]] = []
    async for chunk in chunks:
        values = chunk_values(job_id, chunk)
        totals.rows += chunk.rows
        totals.chunks += 1
        if chunk.outcomes is not None:
            totals.done += 1
            totals.succeeded += values["succeeded"]
            totals.failed += values["failed"]
        if max_rows is not None and totals.rows > max_rows:
            raise PayloadTooLarge(f"a job holds at most {max_rows} rows", limit=max_rows)
        batch.append(values)
        if len(batch) == BATCH_CHUNKS:
            await session.execute(insert(JobChunkRow).values(batch))
            batch = []
    if batch:
        await session.execute(insert(JobChunkRow).values(batch))
    if totals.rows == 0:
        raise InvalidInput("a job needs at least one row", field="inputs")
    return totals


def chunk_values(job_id: str, chunk: NewChunk) -> dict[str, Any]:
    """The ``job_chunks`` row of a new chunk; a reject chunk is stored done, with its outcomes."""
    per_row = [len(chunk.indexes), len(chunk.custom_ids)] + ([] if chunk.lines is None else [len(chunk.lines)])
    if chunk.rows < 1 or any(n != chunk.rows for n in per_row):
        raise ValueError(f"chunk {chunk.seq}: indexes, custom_ids and lines need one entry per row ({chunk.rows})")
    if (chunk.inputs is None) == (chunk.outcomes is None):
        raise ValueError(f"chunk {chunk.seq}: inputs (rows to run) or outcomes (rejected rows), not both")
    outcomes = chunk.outcomes
    if outcomes is not None and len(outcomes) != chunk.rows:
        raise ValueError(f"chunk {chunk.seq}: {len(outcomes)} outcomes for {chunk.rows} rows")
    failed = 0 if outcomes is None else sum(outcome.error is not None for outcome in outcomes)
    return {
        "job_id": job_id,
        "seq": chunk.seq,
        "row_count": chunk.rows,
        "indexes": list(chunk.indexes),
        "custom_ids": list(chunk.custom_ids),
        "lines": None if chunk.lines is None else list(chunk.lines),
        "inputs": chunk.inputs,
        "status": "queued" if outcomes is None else "done",
        "outputs": None if outcomes is None else outcomes_encoder.encode(outcomes),
        "succeeded": 0 if outcomes is None else chunk.rows - failed,
        "failed": failed,
        "finished_at": None if outcomes is None else func.now(),
    }


async def set_totals(session: AsyncSession, job_id: str, totals: Totals) -> JobRow:
    """Write the totals. A job with no row left to run (all rejected) finishes at once, with its event."""
    values: dict[str, Any] = {
        "total_rows": totals.rows,
        "succeeded_rows": totals.succeeded,
        "failed_rows": totals.failed,
        "chunks_total": totals.chunks,
        "chunks_done": totals.done,
    }
    finished = totals.done == totals.chunks
    if finished:
        values["status"] = "succeeded" if totals.succeeded else "failed"
        values["finished_at"] = func.now()
        if not totals.succeeded:
            message = f"all {totals.rows} rows were rejected (see errors.jsonl)"
            values["error"] = to_json(ErrorInfo(code="invalid_input", message=message))
    stmt = update(JobRow).where(JobRow.id == job_id).values(values).returning(JobRow)
    row = (await session.scalars(stmt.execution_options(populate_existing=True))).one()
    if finished:
        await outbox.emit(session, row, "job.succeeded" if totals.succeeded else "job.failed")
    return row
