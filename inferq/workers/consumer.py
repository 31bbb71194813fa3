"""The partition loop: read both lanes, form a row-bounded batch, run it, settle it in one pipeline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from inferq.contracts.messages import InferRequest, request_decoder
from inferq.errors import InvalidInput
from inferq.settings import QueueSettings
from inferq.streams.consumer import Entry, ensure_groups, is_nogroup, queue_read, read, read_replies
from inferq.streams.partition import Partition
from inferq.streams.producer import enqueued_ms
from inferq.workers.backoff import Backoff, sleep_unless
from inferq.workers.batch import Work, finish, rows_of
from inferq.workers.clock import RedisClock
from inferq.workers.executor import Executor
from inferq.workers.publisher import Outcome, Publisher

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    entry: Entry
    work: Work


class PartitionConsumer:
    """Consumes one partition until stopped: reads with ``>``, so it only ever sees new entries.

    Entries read beyond the current batch are carried to the next one (they are already in this
    consumer's pending list); on stop, the carried entries are run and acked before returning.
    """

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
        self._carry: list[Item] = []  # read, not yet run; interactive first
        self._early: list[Outcome] = []  # decided at read time: undecodable, wrong partition
        self._unsettled: list[Outcome] = []  # answered, but the settle pipeline failed
        self._persisting: asyncio.Task[None] | None = None  # job chunks being stored in Postgres, then acked
        self._fresh = False  # the carry was just topped up by the read behind the last settle
        self._backlogged = False  # the last read came back full: more is probably waiting
        self.draining = False  # the version left the selection: stop once both lanes are empty

    @property
    def partition(self) -> str:
        """The partition's key (``model@version``)."""
        return self._part.key

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` (finish the batch and the carry first) or, when draining, until empty."""
        backoff = Backoff()
        groups_ready = False
        while True:
            try:
                if not groups_ready:
                    await ensure_groups(self._redis, self._part)
                    groups_ready = True
                reading = not stop.is_set()
                if self._unsettled:
                    await self._settle(self._unsettled, stop=None)
                if not reading and not self._carry and not self._early:
                    await self._persisted()
                    return
                await self._fill(reading=reading)
                if self._carry or self._early:
                    await self._process(stop)
                elif self.draining and await self._empty():
                    await self._persisted()
                    log.info("partition.drained", partition=self._part.key)
                    return
                backoff.reset()
            except asyncio.CancelledError:
                if self._persisting is not None:  # its entries stay pending: reclaimed and stored once
                    self._persisting.cancel()
                raise
            except Exception as exc:
                if isinstance(exc, ResponseError) and is_nogroup(exc):
                    groups_ready = False  # Redis lost the stream or group (restarted without data)
                if stop.is_set():  # what is left pending is reclaimed by another worker
                    log.warning("partition.abandoned", partition=self._part.key, error=str(exc))
                    await self._persisted()
                    return
                delay = backoff.next()
                log.warning("partition.retry", partition=self._part.key, error=str(exc), backoff_s=round(delay, 3))
                await sleep_unless(stop, delay)

    async def _fill(self, *, reading: bool) -> None:
        queue, fresh, self._fresh = self._queue, self._fresh, False
        if not reading:
            return
        room, bulk = self._room()
        if (room > 0 or bulk > 0) and not (fresh and self._carry):
            if self._carry or self._early or not fresh:
                await self._read(count=room, bulk=bulk, block_ms=None)
            if not self._carry and not self._early:  # nothing waiting: block on both lanes for the next entry
                await self._read(count=1, bulk=1, block_ms=queue.block_ms)
        if queue.max_batch_delay_ms <= 0 or not self._carry:
            return
        deadline = time.monotonic() + queue.max_batch_delay_ms / 1000
        while (room := self._room()[0]) > 0:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms < 1:
                return
            # NOTE: at most block_ms per read: the client's socket timeout allows that much (streams/connection.py),
            # and max_batch_delay_ms is a per-version override that may be longer. A read outliving the socket
            # timeout failed every time: the carry was never run, only reclaimed entry by entry, much later.
            await self._read(count=room, bulk=0, block_ms=min(left_ms, queue.block_ms))

    def _room(self) -> tuple[int, int]:
        """Interactive rows that still fit a batch, and job chunks to read: one carried at a time, so a
        job's chunks never queue up in front of interactive requests (or away from other workers)."""
        interactive = [item.work for item in self._carry if item.entry.lane == "interactive"]
        bulk = 0 if any(item.entry.lane == "bulk" for item in self._carry) else 1
        return self._queue.max_batch - rows_of(interactive), bulk

    async def _read(self, *, count: int, bulk: int, block_ms: int | None) -> None:
        entries = await read(
            self._redis, self._part, consumer=self._consumer, count=max(count, 0), bulk=bulk, block_ms=block_ms
        )
        self._backlogged = sum(e.lane == "interactive" for e in entries) >= count > 0 or (
            bulk > 0 and any(e.lane == "bulk" for e in entries)
        )
        self._accept(entries)

    def _accept(self, entries: list[Entry]) -> None:
        if not entries:
            return
        now = self._clock.now_ms()
        items: list[Item] = []
        for entry in entries:
            decoded = decode(entry, self._part, now_ms=now)
            if isinstance(decoded, Outcome):
                self._early.append(decoded)
            else:
                items.append(Item(entry, decoded))
        # NOTE: a stable sort: interactive before bulk, first come first served within a lane.
        self._carry = sorted(self._carry + items, key=lambda item: item.entry.lane != "interactive")

    def _take(self) -> list[Item]:
        """The longest prefix of the carry within ``max_batch`` rows (at least one entry)."""
        rows, taken = 0, 0
        for item in self._carry:
            item_rows = max(1, item.work.request.rows)
            if taken and rows + item_rows > self._queue.max_batch:
                break
            rows += item_rows
            taken += 1
        batch, self._carry = self._carry[:taken], self._carry[taken:]
        return batch

    async def _process(self, stop: asyncio.Event) -> None:
        outcomes, self._early = self._early, []
        batch = self._take()
        try:
            batch = await self._without_ended_jobs(batch, outcomes)
        except BaseException:  # Postgres unreachable: keep everything for the next turn
            self._carry, self._early = batch + self._carry, outcomes + self._early
            raise
        if batch:
            works = [item.work for item in batch]
            try:
                results = await self._executor.run(works, keep_alive=[i.entry for i in batch + self._carry])
            except BaseException:
                self._carry = batch + self._carry  # nothing was answered: run them again later
                self._early = outcomes + self._early
                raise
            for item, result in zip(batch, results, strict=True):
                request = item.work.request
                outcomes.append(Outcome(item.entry, result, request.reply, job=request.job, rows=request.rows,
                                        request=request))  # fmt: skip
        await self._settle(outcomes, stop=stop)

    async def _without_ended_jobs(self, batch: list[Item], outcomes: list[Outcome]) -> list[Item]:
        """Chunks of canceled, expired or finished jobs are skipped (acked, never run): moved to ``outcomes``."""
        job_ids = [item.work.request.job.job_id for item in batch if item.work.request.job is not None]
        if not job_ids or self._publisher.jobs is None:
            return batch
        ended = await self._publisher.jobs.ended(job_ids)
        if not ended:
            return batch
        keep = []
        for item in batch:
            job = item.work.request.job
            if job is not None and job.job_id in ended:
                outcomes.append(Outcome(item.entry, None, job=job, rows=item.work.request.rows))
            else:
                keep.append(item)
        return keep

    async def _settle(self, outcomes: list[Outcome], *, stop: asyncio.Event | None) -> None:
        """One round trip: the results, the acks, and (unless stopping) the next non-blocking read.

        Job chunks are stored in Postgres and acked by a task of their own, so that the database's round
        trips never hold up the interactive requests read next (one chunk is being stored at a time).
        """
        chunks = [o for o in outcomes if o.job is not None]
        if chunks:
            outcomes = [o for o in outcomes if o.job is None]
            await self._persisted()
            self._persisting = asyncio.create_task(self._store_chunks(chunks), name=f"chunks:{self._part.key}")
        room, bulk = self._room()
        # NOTE: decided now, not before the run: a stop that came while the batch ran means no more reads.
        # Only under a backlog: at low load the read would come back empty and delay the next blocking one.
        read_next = stop is not None and not stop.is_set() and self._backlogged
        pipe = self._redis.pipeline(transaction=False)
        self._publisher.queue(pipe, self._part, outcomes, consumer=self._consumer)
        queued = queue_read(pipe, self._part, consumer=self._consumer, count=room, bulk=bulk) if read_next else 0
        self._unsettled = outcomes
        replies = await pipe.execute()
        self._unsettled = []
        if queued:
            entries = read_replies(self._part, replies[-queued:])
            self._backlogged = sum(e.lane == "interactive" for e in entries) >= room > 0 or (
                bulk > 0 and any(e.lane == "bulk" for e in entries)
            )
            self._accept(entries)
            self._fresh = True

    async def _store_chunks(self, chunks: list[Outcome]) -> None:
        try:
            await self._publisher.settle(self._part, chunks, consumer=self._consumer)
        except Exception as exc:  # left pending: reclaimed, run again, and stored once (a rerun changes nothing)
            log.warning("job.chunks_unsettled", partition=self._part.key, error=str(exc))

    async def _persisted(self) -> None:
        """Wait for the job chunks being stored, if any."""
        if self._persisting is not None:
            task, self._persisting = self._persisting, None
            await task

    async def _empty(self) -> bool:
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(self._part.work)
        pipe.xlen(self._part.bulk)
        lengths: list[int] = await pipe.execute()
        return sum(lengths) == 0


def decode(entry: Entry, part: Partition, *, now_ms: float) -> Work | Outcome:
    """The entry's work, or what to do with it at once: dead-letter it (undecodable) or fail it
    (a request for another partition). Both are deterministic: retrying cannot help."""
    try:
        request: InferRequest = request_decoder.decode(entry.message)
    except msgspec.DecodeError as exc:
        log.warning("request.undecodable", partition=part.key, entry=entry.id, error=str(exc))
        return Outcome(entry, None, dead_reason=f"undecodable message: {exc}")
    work = Work(request=request, enqueued_ms=enqueued_ms(entry.id), dequeued_ms=now_ms, delivery=entry.deliveries)
    if (request.model, request.version) != (part.model, part.version):
        error = InvalidInput(f"a request for {request.model}@{request.version} on partition {part.key}")
        failed = finish(work, "failed", error=error)
        return Outcome(entry, failed, request.reply, job=request.job, rows=request.rows, request=request)
    return work
