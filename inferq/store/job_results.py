"""A job's per-row results, read chunk by chunk in ``seq`` order: cursor pages and streamed lines.

Results come in chunk order, then row order within a chunk; each line carries the row's
``index`` in the submission and its ``custom_id``. Only finished chunks have results, so pages
read before the job is terminal may later gain rows behind the cursor: read once it is terminal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Literal

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.jobs import ResultFilter, ResultLine, ResultPage, outcomes_decoder
from inferq.store.job_records import check_limit, read_result_cursor, result_cursor
from inferq.store.sessions import statement
from inferq.store.tables import JobChunkRow

# Chunks read per statement (≈ 256 rows each): downloads take more at a time than pages.
BATCH_CHUNKS = 16
PAGE_CHUNKS = 4
_ChunkRow = Row[int, list[str | None], list[int], list[int] | None, bytes | None]


async def results_page(
    session: AsyncSession, job_id: str, *, cursor: str | None, limit: int, which: ResultFilter
) -> ResultPage:
    """Up to ``limit`` results from ``cursor`` on, and the cursor of the next page (``None`` at the end)."""
    check_limit(limit)
    seq, position = read_result_cursor(cursor) if cursor else (0, 0)
    lines: list[tuple[int, int, ResultLine]] = []
    while len(lines) <= limit:
        chunks = await _chunks(session, job_id, from_seq=seq, which=which, batch=PAGE_CHUNKS)
        for chunk in chunks:
            skip = position if chunk.seq == seq else 0
            lines.extend((chunk.seq, at, line) for at, line in _expand(chunk, which) if at >= skip)
        if len(chunks) < PAGE_CHUNKS:
            break
        seq, position = chunks[-1].seq + 1, 0
    page = lines[:limit]
    following = result_cursor(lines[limit][0], lines[limit][1]) if len(lines) > limit else None
    return ResultPage(data=tuple(line for _, _, line in page), next_cursor=following)


async def iter_results(
    sessionmaker: async_sessionmaker[AsyncSession], job_id: str, *, which: ResultFilter
) -> AsyncIterator[ResultLine]:
    """Every result, one short statement per ``BATCH_CHUNKS`` chunks (never all chunks at once)."""
    seq = 0
    while True:
        async with statement(sessionmaker) as session:
            chunks = await _chunks(session, job_id, from_seq=seq, which=which, batch=BATCH_CHUNKS)
        for chunk in chunks:
            for _, line in _expand(chunk, which):
                yield line
        if len(chunks) < BATCH_CHUNKS:
            return
        seq = chunks[-1].seq + 1


async def _chunks(
    session: AsyncSession, job_id: str, *, from_seq: int, which: ResultFilter, batch: int
) -> list[_ChunkRow]:
    """The next finished chunks from ``from_seq`` on that have rows ``which`` asks for."""
    c = JobChunkRow
    stmt = (
        select(c.seq, c.custom_ids, c.indexes, c.lines, c.outputs)
        .where(c.job_id == job_id, c.status == "done", c.seq >= from_seq)
        .order_by(c.seq)
        .limit(batch)
    )
    if which != "all":
        stmt = stmt.where((c.succeeded if which == "succeeded" else c.failed) > 0)
    return list((await session.execute(stmt)).all())


def _expand(chunk: _ChunkRow, which: ResultFilter) -> Iterator[tuple[int, ResultLine]]:
    """The chunk's rows as ``(position in the chunk, result line)``, filtered by ``which``."""
    outcomes = outcomes_decoder.decode(chunk.outputs)  # a CHECK keeps ``outputs`` set on done chunks
    for at, outcome in enumerate(outcomes):
        status: Literal["succeeded", "failed"] = "succeeded" if outcome.error is None else "failed"
        if which not in ("all", status):
            continue
        yield (
            at,
            ResultLine(
                custom_id=chunk.custom_ids[at],
                index=chunk.indexes[at],
                line=None if chunk.lines is None else chunk.lines[at],
                status=status,
                prediction=outcome.prediction,
                error=outcome.error,
            ),
        )
