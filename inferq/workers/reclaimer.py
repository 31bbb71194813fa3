"""Crash recovery: claim entries a dead (or stuck) consumer left pending; run them one at a time.

Every ``reclaim_interval_ms`` the reclaimer looks for entries idle longer than ``reclaim_min_idle_ms``
on both lanes and XAUTOCLAIMs them. An entry delivered more than ``max_deliveries`` times goes to the
dead-letter stream with a ``dead_lettered`` result; the others are run alone, so a poison message
(one that crashes or hangs its worker) cannot take its batch-mates into the DLQ with it.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
import structlog

from inferq.contracts.messages import Lane
from inferq.errors import InferenceFailed, InvalidModel, ModelLoadFailed, NotFound, ServiceUnavailable
from inferq.settings import QueueSettings
from inferq.streams.connection import UNAVAILABLE
from inferq.streams.consumer import LANES, Entry, claim, is_nogroup
from inferq.streams.partition import Partition
from inferq.workers.backoff import sleep_unless
from inferq.workers.batch import finish
from inferq.workers.clock import RedisClock
from inferq.workers.consumer import decode
from inferq.workers.executor import Executor
from inferq.workers.publisher import Outcome, Publisher

log = structlog.get_logger(__name__)
# NOTE: one entry per claim: claiming counts a delivery, so a batch claimed together would walk healthy
# entries towards the dead-letter stream whenever an earlier one (a poison message) crashes the process.
CLAIM_COUNT = 1


class Reclaimer:
    """Sweeps one partition's pending entries; runs alongside its ``PartitionConsumer``."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        part: Partition,
        queue: QueueSettings,
        consumer: str,
        executor: Executor,
        publisher: Publisher,
        clock: RedisClock,
    ) -> None:
        self._redis = redis
        self._part = part
        self._queue = queue
        self._consumer = consumer
        self._executor = executor
        self._publisher = publisher
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_unless(stop, self._queue.reclaim_interval_ms / 1000):
            try:
                await self.sweep(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # NOGROUP and a down Redis are the consumer loop's to report (with backoff): stay quiet.
                quiet = is_nogroup(exc) or isinstance(exc, (*UNAVAILABLE, ServiceUnavailable))
                (log.debug if quiet else log.warning)("reclaim.failed", partition=self._part.key, error=str(exc))

    async def sweep(self, stop: asyncio.Event | None = None) -> int:
        """One pass over both lanes; how many entries were handled."""
        lanes = await self._lanes_with_idle_entries()
        if not lanes:
            return 0
        # NOTE: load the model before claiming: claiming counts a delivery, and a Postgres outage
        # (ServiceUnavailable, raised here) must not walk entries towards the dead-letter stream.
        # A model that cannot load at all is claimed anyway: its requests fail with the load error.
        with contextlib.suppress(InvalidModel, ModelLoadFailed, NotFound):
            await self._executor.load()
        handled = 0
        for lane in lanes:
            cursor = "0-0"
            while stop is None or not stop.is_set():
                cursor, entries = await claim(
                    self._redis, self._part, lane=lane, consumer=self._consumer,
                    min_idle_ms=self._queue.reclaim_min_idle_ms, start=cursor, count=CLAIM_COUNT,
                )  # fmt: skip
                for entry in entries:  # claimed: handle every one, even when stopping
                    await self._handle(entry)
                    handled += 1
                if cursor == "0-0":
                    break
        return handled

    async def _lanes_with_idle_entries(self) -> list[Lane]:
        pipe = self._redis.pipeline(transaction=False)
        for lane in LANES:
            stream = self._part.stream(lane)
            pipe.xpending_range(stream, self._part.group, "-", "+", 1, idle=self._queue.reclaim_min_idle_ms)
        replies = await pipe.execute()
        return [lane for lane, idle in zip(LANES, replies, strict=True) if idle]

    async def _handle(self, entry: Entry) -> None:
        decoded = decode(entry, self._part, now_ms=self._clock.now_ms())
        if isinstance(decoded, Outcome):
            await self._publisher.settle(self._part, [decoded], consumer=self._consumer)
            return
        request, limit = decoded.request, self._queue.max_deliveries
        if entry.deliveries > limit:
            reason = f"delivered {entry.deliveries} times (max {limit}): worker crashed or timed out"
            error = InferenceFailed(reason, deliveries=entry.deliveries)
            result = finish(decoded, "dead_lettered", error=error)
            outcome = Outcome(
                entry, result, request.reply, dead_reason=reason, job=request.job, rows=request.rows, request=request
            )
            await self._publisher.settle(self._part, [outcome], consumer=self._consumer)
            log.warning("request.dead_lettered", partition=self._part.key, id=request.id, reason=reason)
            return
        log.warning("request.reclaimed", partition=self._part.key, id=request.id, delivery=entry.deliveries)
        [result] = await self._executor.run([decoded], keep_alive=[entry])
        outcome = Outcome(entry, result, request.reply, job=request.job, rows=request.rows, request=request)
        await self._publisher.settle(self._part, [outcome], consumer=self._consumer)
