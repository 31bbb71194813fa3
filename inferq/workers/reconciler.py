"""The reconciler: what Postgres says should be happening, made to happen again in Redis; then expiry and retention.

One pass, four steps, each on its own (a failing step is logged and the next runs; the next pass retries):

1. chunks of open jobs whose stream entry vanished (or never got there) are enqueued again;
2. open jobs past their deadline expire (one ``job.expired`` event each) and their deliveries are scheduled;
3. pending webhook deliveries overdue by more than the grace are scheduled again (arq dedupes by job id);
4. jobs finished longer than ``job_retention_s`` ago are deleted with their rows, results and events.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import LockError, RedisError

from inferq.contracts.jobs import QueuedChunk
from inferq.contracts.names import Names
from inferq.errors import DeliveryNotFound, ServiceUnavailable
from inferq.settings import JobsSettings
from inferq.store.deliveries import DeliveryStore
from inferq.store.jobs import JobStore
from inferq.streams.chunks import chunk_message, enqueue_chunks, entries_present
from inferq.streams.connection import UNAVAILABLE
from inferq.streams.tasks import TaskQueue

MAX_PAGES = 50  # chunks re-checked per pass: MAX_PAGES × batch

log = structlog.get_logger(__name__)

BATCH = 100  # chunks and deliveries looked at per step and pass
RETENTION_BATCH = 1000


class ReconcileReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one pass did; ``failed`` names the steps that met an error (and will be retried next pass)."""

    requeued: int = 0
    expired: int = 0
    scheduled: int = 0
    deleted: int = 0
    failed: tuple[str, ...] = ()


class Reconciler:
    """Runs reconciler passes; safe to run from several task workers at once (requeueing takes a lock)."""

    def __init__(
        self,
        *,
        jobs: JobStore,
        deliveries: DeliveryStore,
        redis: aioredis.Redis,
        names: Names,
        queue: TaskQueue,
        settings: JobsSettings,
        grace_s: float | None = None,
        batch: int = BATCH,
    ) -> None:
        self._jobs = jobs
        self._deliveries = deliveries
        self._redis = redis
        self._names = names
        self._queue = queue
        self._settings = settings
        self._grace_s = settings.reconcile_interval_s if grace_s is None else grace_s
        self._batch = batch
        self._lock_key = f"{names.prefix}:reconciler:requeue"

    async def run(self, *, now: dt.datetime | None = None) -> ReconcileReport:
        """One pass at ``now`` (default: the current time)."""
        at = dt.datetime.now(dt.UTC) if now is None else now
        steps: tuple[tuple[str, str, Callable[[dt.datetime], Awaitable[int]]], ...] = (
            ("requeued", "reconciler.requeued", self.requeue_stranded),
            ("expired", "reconciler.expired", self.expire_overdue),
            ("scheduled", "reconciler.scheduled", self.schedule_lost_deliveries),
            ("deleted", "reconciler.deleted", self.delete_old_jobs),
        )
        counts: dict[str, Any] = {}
        failed: list[str] = []
        for name, event, step in steps:
            try:
                counts[name] = await step(at)
            except (ServiceUnavailable, RedisError, *UNAVAILABLE) as exc:  # the other steps still run
                log.warning("reconciler.step_failed", step=name, error=f"{type(exc).__name__}: {exc}")
                failed.append(name)
                continue
            except Exception:  # a bug: logged with its traceback, and the other steps still run
                log.exception("reconciler.step_failed", step=name)
                failed.append(name)
                continue
            log.log(logging.INFO if counts[name] else logging.DEBUG, event, count=counts[name])
        return ReconcileReport(**counts, failed=tuple(failed))

    async def requeue_stranded(self, now: dt.datetime) -> int:
        """Enqueue again the queued chunks (of open jobs) whose stream entry is gone; how many."""
        lock = self._redis.lock(self._lock_key, timeout=max(60.0, 2 * self._settings.reconcile_interval_s))
        if not await lock.acquire(blocking=False):
            log.info("reconciler.requeue_busy")  # another task worker is at it
            return 0
        try:
            older_than = now - dt.timedelta(seconds=self._settings.stranded_after_s)
            requeued = 0
            for _ in range(MAX_PAGES):  # a wiped Redis may have lost thousands of chunks: not 100 per pass
                chunks = await self._jobs.stranded_chunks(older_than=older_than, limit=self._batch)
                if not chunks:
                    break
                requeued += await self._requeue_page(chunks, now=now)
                if len(chunks) < self._batch:
                    break
            return requeued
        finally:
            with contextlib.suppress(LockError):  # held longer than its timeout: another pass may own it now
                await lock.release()

    async def _requeue_page(self, chunks: list[QueuedChunk], *, now: dt.datetime) -> int:
        """Re-enqueue the chunks whose entry is gone; mark the ones still on their lane as seen now, so the
        next page (and the next pass, until ``stranded_after_s``) moves past them."""
        present = await entries_present(self._redis, self._names, chunks)
        missing = [chunk for chunk, there in zip(chunks, present, strict=True) if not there]
        readable = {(c.job_id, c.seq) for c in missing if _readable(c, now=now)}
        entries = await enqueue_chunks(
            self._redis, self._names, [c for c in missing if (c.job_id, c.seq) in readable], now=now
        )
        seen = [(c.job_id, c.seq, c.entry_id or "") for c, there in zip(chunks, present, strict=True) if there]
        seen += [(c.job_id, c.seq, "") for c in missing if (c.job_id, c.seq) not in readable]  # logged, seen later
        by_job: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
        for job_id, seq, entry_id in [*entries, *seen]:
            by_job[job_id].append((seq, entry_id))
        for job_id, marks in by_job.items():
            await self._jobs.mark_enqueued(job_id, marks)
        return len(entries)

    async def expire_overdue(self, now: dt.datetime) -> int:
        """Expire open jobs past their deadline and schedule their ``job.expired`` deliveries; how many expired."""
        events = await self._jobs.expire_due(now)
        if events:
            await self._queue.deliver_new(events)
        return len(events)

    async def schedule_lost_deliveries(self, now: dt.datetime) -> int:
        """Schedule pending deliveries overdue by more than the grace; how many arq did not know already."""
        scheduled = 0
        for delivery_id in await self._deliveries.pending_unknown(now, grace_s=self._grace_s, limit=self._batch):
            try:
                task = await self._deliveries.load(delivery_id)
            except DeliveryNotFound:  # deleted by retention since
                continue
            if task.status == "pending":
                scheduled += await self._queue.deliver(delivery_id, attempt=task.attempts + 1)
        return scheduled

    async def delete_old_jobs(self, now: dt.datetime) -> int:
        """Retention: delete jobs finished before ``now - job_retention_s``; how many."""
        cutoff = now - dt.timedelta(seconds=self._settings.job_retention_s)
        return await self._jobs.delete_finished_before(cutoff, limit=RETENTION_BATCH)


def _readable(chunk: QueuedChunk, *, now: dt.datetime) -> bool:
    """Whether the chunk's stored inputs make a message; one corrupt chunk must not stall the others."""
    try:
        chunk_message(chunk, now=now)
    except msgspec.DecodeError:  # ValidationError included
        log.error("reconciler.unreadable_chunk", job_id=chunk.job_id, seq=chunk.seq)
        return False
    return True


async def reconcile(ctx: dict[str, Any], slot: int) -> ReconcileReport:
    """The arq job ``reconcile``: one pass for time slot ``slot`` (``ctx["reconciler"]`` runs it)."""
    reconciler: Reconciler = ctx["reconciler"]
    return await reconciler.run()
