"""Running a partition's batches: the lazily loaded runner, inline or in a thread, heartbeats, throughput."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from inferq.contracts.messages import InferResult
from inferq.contracts.models import ModelVersion
from inferq.contracts.names import Names
from inferq.engine import Runner
from inferq.errors import InferqError, ServiceUnavailable
from inferq.settings import Settings
from inferq.streams.consumer import Entry, heartbeat
from inferq.streams.partition import Partition
from inferq.workers.backoff import sleep_unless
from inferq.workers.batch import Work, execute, finish, rows_of
from inferq.workers.clock import RedisClock
from inferq.workers.ledger import RunLedger
from inferq.workers.models import ModelSource

log = structlog.get_logger(__name__)

# NOTE: ``asyncio.to_thread`` costs ~0.13-0.15 ms per batch here (measured: a 100-tree forest drains 8 %
# slower at batch 64, 25 % at batch 8, when threaded). A thread pays off only for runs long enough
# that the event loop has useful work meanwhile (acks, heartbeats, other partitions): from ~2 ms.
INLINE_MAX_MS = 2.0


SMALL_BATCH_ROWS = 4  # runs this small measure the fixed cost; larger ones the cost per row
# A model that failed to load marks its partition broken this long (renewed by every failure): aliases with
# fallback send their traffic elsewhere meanwhile (api/readiness.py), then try it again.
BROKEN_TTL_S = 30


@dataclass(slots=True)
class Throughput:
    """Rows answered so far, and a run-time model ``fixed_ms + rows × ms_per_row`` (is a batch long?).

    NOTE: one smoothed "ms per row" over all runs mixes batch-1 runs, where the fixed cost dominates
    (~0.1 ms/row), with full batches (~0.005 ms/row), and sent full batches to a thread by mistake.
    """

    rows: int = 0
    fixed_ms: float = 0.0
    ms_per_row: float = 0.0

    def add(self, rows: int, elapsed_ms: float) -> None:
        self.rows += rows
        if rows <= SMALL_BATCH_ROWS:
            self.fixed_ms = _smooth(self.fixed_ms, elapsed_ms)
        else:
            self.ms_per_row = _smooth(self.ms_per_row, max(0.0, elapsed_ms - self.fixed_ms) / rows)

    def predict_ms(self, rows: int) -> float | None:
        """Expected run time of ``rows``; ``None`` until a larger batch has been measured."""
        if self.ms_per_row == 0:
            return None
        return self.fixed_ms + rows * self.ms_per_row


def _smooth(average: float, sample: float) -> float:
    return sample if average == 0 else 0.8 * average + 0.2 * sample


class Executor:
    """Runs batches of one partition; ``settings`` are the process's with the version's overrides."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        part: Partition,
        version: ModelVersion,
        settings: Settings,
        consumer: str,
        models: ModelSource,
        clock: RedisClock,
        ledger: RunLedger | None,
    ) -> None:
        self._redis = redis
        self._part = part
        self._version = version
        self._settings = settings
        self._consumer = consumer
        self._models = models
        self._clock = clock
        self._ledger = ledger
        self._broken_key = Names(settings.services.key_prefix).broken(part.key)
        self.throughput = Throughput()

    async def run(self, works: Sequence[Work], *, keep_alive: Sequence[Entry]) -> list[InferResult]:
        """One result per work. ``keep_alive``: entries to heartbeat while a threaded run lasts.

        Raises ``ServiceUnavailable`` (Postgres down while loading) and ``ModelLoadFailed`` from a
        runner evicted mid-run: nothing was answered, the caller keeps the entries and retries.
        """
        try:
            if self._models.loaded(self._version, engine=self._settings.engine):
                runner = await self.load()
            else:  # a first load can take seconds: the entries must not look abandoned meanwhile
                async with self._heartbeats(keep_alive):
                    runner = await self.load()
        except ServiceUnavailable:
            raise
        except InferqError as exc:
            log.error("model.load_failed", partition=self._part.key, error=exc.message, code=exc.code)
            if not exc.details.get("transient"):  # a race with the cache's eviction mends itself: no fallback
                await self._mark_broken(exc.message)
            return [finish(work, "failed", error=exc) for work in works]
        rows = rows_of(works)
        threaded = self._threaded(rows)
        call = functools.partial(
            execute,
            works,
            runner,
            now_ms=self._clock.now_ms,
            max_elements=self._settings.api.max_elements,  # the API's limit: what it accepted must run
            on_run=self._ledger.record if self._ledger else None,
        )
        started = time.perf_counter()
        if threaded:
            async with self._heartbeats(keep_alive):
                results = await asyncio.to_thread(call)
        else:
            results = call()
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.throughput.add(rows, elapsed_ms)
        log.debug(
            "batch.completed",
            partition=self._part.key,
            rows=rows,
            messages=len(works),
            inference_ms=round(max((r.timings.inference_ms for r in results if r.timings), default=0.0), 3),
            elapsed_ms=round(elapsed_ms, 3),
            threaded=threaded,
        )
        return results

    def _threaded(self, rows: int) -> bool:
        """Predicted to run ≥ ``INLINE_MAX_MS``; before any measurement, ``thread_crossover_rows`` decides."""
        predicted = self.throughput.predict_ms(rows)
        if predicted is None:
            return rows >= self._settings.queue.thread_crossover_rows
        return predicted >= INLINE_MAX_MS

    async def _mark_broken(self, error: str | None) -> None:
        """Set the partition's broken key (``error``: the load failed) or delete it (the model loaded)."""
        try:
            if error is None:
                await self._redis.delete(self._broken_key)
            else:
                await self._redis.set(self._broken_key, error[:500], ex=BROKEN_TTL_S)
        except Exception as exc:  # a lost mark only delays fallback; the results still go out
            log.warning("model.broken_mark_failed", partition=self._part.key, error=str(exc))

    async def load(self) -> Runner:
        """The version's runner, loaded on first use (``ServiceUnavailable`` while Postgres is down).

        A first load that works clears the partition's broken mark (``run`` sets it when loading fails).
        """
        if self._models.loaded(self._version, engine=self._settings.engine):
            return await self._models.runner(self._version, engine=self._settings.engine)
        runner = await self._models.runner(self._version, engine=self._settings.engine)
        await self._mark_broken(None)
        return runner

    @contextlib.asynccontextmanager
    async def _heartbeats(self, entries: Sequence[Entry]) -> AsyncIterator[None]:
        ended = asyncio.Event()
        task = asyncio.create_task(self._beat(list(entries), ended), name=f"heartbeat:{self._part.key}")
        try:
            yield
        finally:
            # NOTE: the flag, not the cancellation, is what ends the loop. On Python 3.11 redis-py sends each
            # command through ``asyncio.wait_for``, which drops a cancellation that lands as the send
            # completes: a heartbeat cancelled then returns normally, and a loop ended by cancellation alone
            # beat on forever. This block then waited for it forever, and the entries it kept fresh were
            # never reclaimed either (the worker stall of the fault tests). The cancel only cuts short a
            # heartbeat in flight; when it is lost, the loop still ends after that one round trip.
            ended.set()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # NOTE: only the heartbeat's own cancellation is expected here; if this task is being
                # cancelled too (a stop that timed out), it must not be swallowed (that hung shutdowns).
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    async def _beat(self, entries: list[Entry], ended: asyncio.Event) -> None:
        """Reset the entries' idle time every ``heartbeat_ms`` until ``ended``, so the reclaimer leaves a long
        run alone."""
        while not await sleep_unless(ended, self._settings.queue.heartbeat_ms / 1000):
            try:
                await heartbeat(self._redis, self._part, consumer=self._consumer, entries=entries)
            except Exception as exc:
                log.warning("heartbeat.failed", partition=self._part.key, error=str(exc))
