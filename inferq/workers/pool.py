"""``WorkerPool``: one worker process serving a set of partitions, re-discovered from the registry."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.models import ModelVersion
from inferq.contracts.names import Names
from inferq.errors import InvalidInput
from inferq.settings import Settings
from inferq.store.artifacts import LocalArtifactCache
from inferq.store.jobs import JobStore
from inferq.store.registry import Registry
from inferq.streams.catalog_revisions import RevisionWatcher
from inferq.streams.partition import Partition
from inferq.streams.results import ResultStore, ResultTTL
from inferq.workers.backoff import Backoff, sleep_unless
from inferq.workers.clock import RedisClock
from inferq.workers.config import for_version
from inferq.workers.consumer import PartitionConsumer
from inferq.workers.executor import Executor
from inferq.workers.ingress import Forwarder, Forwarding
from inferq.workers.job_sink import JobSink, Schedule
from inferq.workers.ledger import RunLedger
from inferq.workers.models import ModelSource
from inferq.workers.observers import observers_for
from inferq.workers.publisher import Publisher
from inferq.workers.reclaimer import Reclaimer
from inferq.workers.selection import Selection
from inferq.workers.upkeep import Upkeep

log = structlog.get_logger(__name__)
CLOCK_SYNC_S = 60.0


@dataclass
class _Served:
    version: ModelVersion
    consumer: PartitionConsumer
    stop: asyncio.Event
    task: asyncio.Task[None]


class WorkerPool:
    """Serves the partitions ``selection`` names until ``stop()``; then every partition finishes its
    batch, runs and acks what it had read, and ``run`` returns.

    Versions leaving the selection (archived or deleted, or an alias moved away) are drained, then
    dropped; new ones are picked up at the next discovery: at once when a registry change is announced
    in Redis (streams/catalog_revisions.py), else every ``discovery_interval_s``. Models load lazily,
    on a partition's first message.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis: aioredis.Redis,
        sessions: async_sessionmaker[AsyncSession],
        selection: Selection,
        consumer: str | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._selection = selection
        self._names = Names(settings.services.key_prefix)
        self._registry = Registry(sessions)
        self._models = ModelSource(sessions=sessions, local=LocalArtifactCache(settings.engine.model_root))
        self._clock = RedisClock()
        queue = settings.queue
        ttl = ResultTTL(long=queue.result_ttl_s, short=queue.result_short_ttl_s or int(2 * queue.wait_max_s))
        jobs = JobSink(JobStore(sessions), schedule=schedule)
        self._observers = observers_for(settings, sessions)
        self._publisher = Publisher(
            redis, results=ResultStore(redis, ttl=ttl), names=self._names, jobs=jobs, observe=self._observers
        )
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()  # the registry announced a change (or the pool is stopping)
        self._served: dict[str, _Served] = {}

    @property
    def partitions(self) -> list[str]:
        """Partition keys currently served (draining ones included)."""
        return sorted(self._served)

    def running(self, key: str) -> asyncio.Task[None] | None:
        """The task serving partition ``key`` (diagnostics and tests)."""
        served = self._served.get(key)
        return served.task if served is not None else None

    def serving(self, key: str) -> ModelVersion:
        """The version (overrides included) partition ``key`` is served with now (diagnostics and tests)."""
        return self._served[key].version

    def stop(self) -> None:
        """Ask the pool to drain and return from ``run`` (safe to call from a signal handler)."""
        self._stop.set()
        self._changed.set()

    async def run(self) -> None:
        ledger = RunLedger(self._settings.queue.run_ledger) if self._settings.queue.run_ledger else None
        log.info("pool.started", consumer=self.consumer, pid=os.getpid())
        forwarder = self._start_forwarder()
        watcher = RevisionWatcher(self._redis, names=self._names)
        watch = asyncio.create_task(watcher.run(self._changed.set, self._stop), name="pool.watch")
        try:
            await self._sync_clock()
            await self._first_discovery(ledger)
            next_sync = time.monotonic() + CLOCK_SYNC_S
            while True:
                await sleep_unless(self._changed, self._settings.queue.discovery_interval_s)
                if self._stop.is_set():
                    break
                self._changed.clear()  # before discovering: a change announced meanwhile makes another pass
                await self._discover(ledger)
                if time.monotonic() >= next_sync:
                    next_sync = time.monotonic() + CLOCK_SYNC_S
                    await self._sync_clock()
        finally:
            self._stop.set()  # the watcher ends on it: a cancel alone can be swallowed (redis-py, Python 3.11)
            watch.cancel()
            for served in self._served.values():
                served.stop.set()
            tasks = [s.task for s in self._served.values()] + ([forwarder] if forwarder else []) + [watch]
            await asyncio.gather(*tasks, return_exceptions=True)
            self._models.close()
            await self._observers.aclose()
            if ledger is not None:
                ledger.close()
            log.info("pool.stopped", consumer=self.consumer)

    async def _first_discovery(self, ledger: RunLedger | None) -> None:
        backoff = Backoff(initial_s=0.2, max_s=5.0)
        while not self._stop.is_set():
            try:
                missing = await self._discover(ledger, quiet=False)
            except InvalidInput:
                raise
            except Exception as exc:  # Postgres unreachable: wait for it rather than exit
                delay = backoff.next()
                log.warning("pool.discovery_failed", error=str(exc), backoff_s=round(delay, 3))
                await sleep_unless(self._stop, delay)
                continue
            if missing:
                raise InvalidInput(f"no such model version to serve: {', '.join(missing)}", models=missing)
            return

    async def _discover(self, ledger: RunLedger | None, *, quiet: bool = True) -> list[str]:
        try:
            wanted, missing = self._selection.pick(await self._registry.list_models())
        except Exception as exc:
            if not quiet:
                raise
            log.warning("pool.discovery_failed", error=str(exc))
            return []
        for key, served in list(self._served.items()):
            if served.task.done():  # drained, or crashed: served again below if still wanted
                if not served.task.cancelled() and served.task.exception() is not None:
                    log.error("partition.crashed", partition=key, error=repr(served.task.exception()))
                del self._served[key]
            elif key not in wanted and not served.consumer.draining:
                log.info("partition.draining", partition=key)
                served.consumer.draining = True
            elif key in wanted and wanted[key].overrides != served.version.overrides and not served.stop.is_set():
                # PATCHed overrides (max_batch, …): stop after the batch in hand, then serve again with them.
                log.info("partition.reconfiguring", partition=key, overrides=wanted[key].overrides)
                served.stop.set()
        for key, version in wanted.items():
            if key not in self._served:
                self._served[key] = self._start(version, ledger)
        return missing

    def _start(self, version: ModelVersion, ledger: RunLedger | None) -> _Served:
        settings = for_version(self._settings, version.overrides)
        part = Partition.of(self._names, model=version.model, version=version.version)
        redis, name, queue = self._redis, self.consumer, settings.queue
        executor = Executor(
            redis=redis, part=part, version=version, settings=settings, consumer=name,
            models=self._models, clock=self._clock, ledger=ledger,
        )  # fmt: skip
        consumer = PartitionConsumer(
            redis=redis, part=part, queue=queue, consumer=name, executor=executor,
            publisher=self._publisher, clock=self._clock,
        )  # fmt: skip
        reclaimer = Reclaimer(
            redis=redis, part=part, queue=queue, consumer=name, executor=executor,
            publisher=self._publisher, clock=self._clock,
        )  # fmt: skip
        upkeep = Upkeep(redis=redis, part=part, queue=queue, consumer=name, throughput=executor.throughput)
        stop = asyncio.Event()
        task = asyncio.create_task(_serve(consumer, reclaimer, upkeep, stop), name=f"partition:{part.key}")
        task.add_done_callback(lambda done: self._drained(part.key, done))
        log.info("partition.started", partition=part.key, consumer=self.consumer)
        return _Served(version=version, consumer=consumer, stop=stop, task=task)

    def _drained(self, key: str, task: asyncio.Task[None]) -> None:
        """A draining (or reconfigured) partition finished: drop it now, and look again (it may be wanted back)."""
        served = self._served.get(key)
        ended = served is not None and (served.consumer.draining or served.stop.is_set())
        if served is None or served.task is not task or not ended or self._stop.is_set():
            return
        if task.cancelled() or task.exception() is not None:
            return  # crashed: the next discovery logs it and serves it again if still wanted
        del self._served[key]  # (the consumer logged partition.drained)
        self._changed.set()

    def _start_forwarder(self) -> asyncio.Task[None] | None:
        """The ingress forwarder, when direct producers are configured (``INFERQ_PRODUCERS``)."""
        producers = self._settings.queue.producer_tenants()
        if not producers:
            return None
        queue = self._settings.queue
        options = Forwarding(
            producers=producers,
            admission_limit=queue.admission_limit,
            deadline_default_ms=int(queue.deadline_default_s * 1000),
            max_elements=self._settings.api.max_elements,
            block_ms=queue.block_ms,
            reclaim_min_idle_ms=queue.reclaim_min_idle_ms,
        )
        forwarder = Forwarder(self._redis, names=self._names, resolve=self._registry.resolve, options=options)
        return asyncio.create_task(forwarder.run(self._stop), name="ingress")

    async def _sync_clock(self) -> None:
        try:
            await self._clock.sync(self._redis)
        except Exception as exc:
            log.warning("clock.sync_failed", error=str(exc))


async def _serve(consumer: PartitionConsumer, reclaimer: Reclaimer, upkeep: Upkeep, stop: asyncio.Event) -> None:
    """The partition's three loops; they end together when the consumer returns (stopped or drained)."""
    key = consumer.partition
    async with asyncio.TaskGroup() as group:  # named: they show up by name in a stack dump (workers/stacks.py)
        group.create_task(reclaimer.run(stop), name=f"reclaimer:{key}")
        group.create_task(upkeep.run(stop), name=f"upkeep:{key}")
        try:
            await consumer.run(stop)
        finally:
            stop.set()
