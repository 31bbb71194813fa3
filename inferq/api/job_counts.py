"""Batch jobs by status, for the API's ``/metrics`` (``inferq_jobs``): one query, at most every 5 s per process.

NOTE: not ``SELECT status, count(*) FROM jobs GROUP BY status``: jobs are kept ``INFERQ_JOB_RETENTION_S``
(30 days) after they finish, so that would scan the whole table on every scrape of every API process.
Open jobs (queued, running) are counted through the partial index ``ix_jobs_open``, finished ones only
for the last 24 h through ``ix_jobs_finished_at`` (tests/integration/test_job_counts.py checks the plan).
The predicates are literal SQL, as in the indexes: Postgres proves a partial index usable from the query
text, and a bound parameter would hide it from a generic plan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import structlog
from sqlalchemy import func, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.store.tables import JobRow

log = structlog.get_logger(__name__)

MAX_AGE_S = 5.0
TIMEOUT_S = 2.0
FINISHED_WINDOW = "24 hours"
COUNTS = union_all(
    select(JobRow.status, func.count()).where(text("status IN ('queued', 'running')")).group_by(JobRow.status),
    select(JobRow.status, func.count())
    .where(JobRow.finished_at > func.now() - text(f"interval '{FINISHED_WINDOW}'"))
    .group_by(JobRow.status),
)


class JobCounts:
    """Jobs by status, read from Postgres at most every ``max_age_s`` (a failed reading is kept as long)."""

    def __init__(self, engine: AsyncEngine, *, max_age_s: float = MAX_AGE_S, timeout_s: float = TIMEOUT_S) -> None:
        self._engine = engine
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._last: tuple[float, Mapping[str, int] | None] | None = None
        self._reading: asyncio.Future[Mapping[str, int] | None] | None = None

    async def read(self) -> Mapping[str, int] | None:
        """``{status: jobs}`` (open: now; finished: the last 24 h), or None when Postgres could not say.

        Callers arriving while a reading is under way share it (one query)."""
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self._max_age_s:
            return self._last[1]
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read(now))
        return await asyncio.shield(self._reading)

    async def _read(self, now: float) -> Mapping[str, int] | None:
        counts: Mapping[str, int] | None
        try:
            counts = await asyncio.wait_for(self._query(), timeout=self._timeout_s)
        except Exception as exc:  # down, slow, or refused: the family is left out, /metrics still answers
            log.warning("metrics.jobs_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
            counts = None
        self._last = (now, counts)
        return counts

    async def _query(self) -> dict[str, int]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(COUNTS)).all()
        return {str(status): int(n) for status, n in rows}
