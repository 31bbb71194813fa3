"""Job chunks' outcomes into Postgres, before their stream entries are acknowledged.

A chunk's rows are stored and the job moved on (``JobStore.complete_chunk``: one transaction, a
rerun changes nothing) before the XACK: a worker that dies in between leaves the entry pending,
the chunk is run again, and the job still gets exactly one result per row and one event per state
change. When Postgres cannot be written, the chunk's entry is simply not acknowledged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.jobs import OPEN_STATUSES, EventRecord, RowOutcome
from inferq.store.jobs import JobStore
from inferq.workers.publisher import Outcome

log = structlog.get_logger(__name__)
Schedule = Callable[[str, int], Awaitable[None]]  # (delivery id, attempt): hand a webhook delivery to the task workers


class JobSink:
    """Stores job outcomes; tells the consumer which chunks belong to jobs that have ended."""

    def __init__(self, store: JobStore, *, schedule: Schedule | None = None, status_ttl_s: float = 1.0) -> None:
        self._store = store
        self._schedule = schedule
        self._status_ttl_s = status_ttl_s
        self._open: dict[str, float] = {}  # job id → when it was last seen open (monotonic)

    async def ended(self, job_ids: Sequence[str]) -> set[str]:
        """Those of ``job_ids`` that are no longer open (canceled, expired, finished, deleted).

        NOTE: a job seen open is trusted for ``status_ttl_s``: one query per job and second instead of
        one per chunk. A cancel takes effect within that time; a chunk started just before it finishes
        and is kept, as running chunks are.
        """
        now = time.monotonic()
        stale = sorted({j for j in job_ids if now - self._open.get(j, -math.inf) > self._status_ttl_s})
        if not stale:
            return set()
        statuses = await self._store.job_statuses(stale)
        if len(self._open) > 10_000:
            self._open.clear()
        ended = set()
        for job_id in stale:
            if statuses.get(job_id) in OPEN_STATUSES:
                self._open[job_id] = now
            else:
                self._open.pop(job_id, None)
                ended.add(job_id)
        return ended

    async def persist(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """What to settle on Redis: job outcomes stored (and then only acked), or left out when Postgres failed."""
        if all(o.job is None for o in outcomes):
            return list(outcomes)
        events: list[EventRecord] = []
        settle: list[Outcome] = []
        for outcome in outcomes:
            if outcome.job is None:
                settle.append(outcome)
                continue
            try:
                events += await self._record(outcome)
            except Exception as exc:
                # Not acked, and not counted as a delivery: the entry stays pending, is reclaimed and run again
                # later, however long Postgres is away; it is never dead-lettered for this.
                log.warning("job.chunk_unsaved", job_id=outcome.job.job_id, seq=outcome.job.seq, error=str(exc))
                settle.append(dataclasses.replace(outcome, result=None, reply=None, retry=True))
                continue
            settle.append(dataclasses.replace(outcome, result=None, reply=None))
        await self._announce(events)
        return settle

    async def _record(self, outcome: Outcome) -> list[EventRecord]:
        assert outcome.job is not None
        job_id, seq, result = outcome.job.job_id, outcome.job.seq, outcome.result
        if result is None or result.status in ("canceled", "expired"):
            await self._store.skip_chunk(job_id, seq)
            # An expired chunk means the job's deadline passed: expire it now rather than at the next reconcile.
            return await self._store.expire_due(dt.datetime.now(dt.UTC)) if result is not None else []
        if result.status == "succeeded":
            rows = tuple(RowOutcome(prediction=p) for p in result.predictions)
        else:  # failed or dead-lettered: every row of the chunk carries the error
            error = result.error or ErrorInfo(code="inference_failed", message=f"the chunk ended {result.status}")
            rows = (RowOutcome(error=error),) * max(1, outcome.rows)
        events = await self._store.complete_chunk(job_id, seq, outcomes=rows)
        log.info("job.chunk_completed", job_id=job_id, seq=seq, rows=len(rows), status=result.status)
        return events

    async def _announce(self, events: Sequence[EventRecord]) -> None:
        for record in events:
            log.info("job.event", job_id=record.event.job_id, type=record.event.type, event_id=record.event.id)
            if record.delivery_id is None or self._schedule is None:
                continue
            try:
                await self._schedule(record.delivery_id, 1)
            except Exception as exc:  # pending in Postgres: the reconciler schedules it
                log.warning("webhook.schedule_deferred", delivery_id=record.delivery_id, error=str(exc))
