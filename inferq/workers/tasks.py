"""``inferq tasks``: the arq worker that runs webhook attempts and the reconciler, built from Settings.

Jobs live on ``{prefix}:tasks``, encoded with msgpack. Every task worker ticks once per
``reconcile_interval_s``: it enqueues the pass of the current time slot under a job id named after the
slot, so however many workers run, one pass per slot runs. arq is at-least-once; both jobs are
idempotent (see ``deliverer`` and ``reconciler``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import structlog
from arq.worker import Worker, func
from redis.exceptions import RedisError

from inferq.contracts.names import Names
from inferq.errors import ServiceUnavailable
from inferq.settings import Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.deliveries import DeliveryStore
from inferq.store.jobs import JobStore
from inferq.store.prediction_log import PredictionLogStore
from inferq.streams.connection import UNAVAILABLE, connect
from inferq.streams.tasks import DELIVER, RECONCILE, TaskQueue, deserialize, queue_name, serialize
from inferq.webhooks.sender import new_client
from inferq.webhooks.signatures import new_secret
from inferq.workers.backoff import Backoff, sleep_unless
from inferq.workers.deliverer import Deliverer, deliver
from inferq.workers.log_retention import LogRetention, reconcile_and_prune
from inferq.workers.reconciler import Reconciler
from inferq.workers.task_metrics import TaskMetrics

log = structlog.get_logger(__name__)

MAX_JOBS = 32  # concurrent jobs per worker: mostly attempts waiting on slow receivers
MAX_TRIES = 5  # arq runs of one attempt whose Postgres was unavailable (``Retry``)
DB_MARGIN_S = 30.0  # an attempt's job timeout: the HTTP attempt plus this for Postgres and Redis
RECONCILE_TIMEOUT_S = 120.0
HEALTH_CHECK_S = 30.0
SHUTDOWN_MARGIN_S = 5  # SIGTERM: attempts in flight get their timeout plus this to finish
RESTART_MAX_S = 30.0  # Redis lost: a new worker after 0.5, 1, 2 … s, at most this


class Lifecycle:
    """arq's ``on_startup``/``on_shutdown``: the stores, HTTP client and services the jobs find in ``ctx``."""

    def __init__(self, settings: Settings, *, metrics: TaskMetrics | None = None) -> None:
        self._settings = settings
        self._metrics = metrics

    async def startup(self, ctx: dict[str, Any]) -> None:
        """Fill ``ctx`` (``ctx["redis"]`` is arq's connection): ``deliverer``, ``reconciler`` and what they use."""
        settings = self._settings
        if settings.services.database_url is None:
            raise ServiceUnavailable("no database URL configured (INFERQ_DATABASE_URL)")
        prefix = settings.services.key_prefix
        engine = create_engine(settings.services.database_url)
        sessions = create_sessionmaker(engine)
        deliveries = DeliveryStore(sessions, new_secret=new_secret)
        queue = TaskQueue(ctx["redis"], prefix=prefix)
        client = new_client()
        ctx.update(engine=engine, queue=queue, client=client)
        ctx["deliverer"] = Deliverer(
            deliveries=deliveries,
            queue=queue,
            client=client,
            jobs=settings.jobs,
            allow_private=settings.webhook_allow_private,
            metrics=self._metrics,
        )
        ctx["reconciler"] = Reconciler(
            jobs=JobStore(sessions),
            deliveries=deliveries,
            redis=ctx["redis"],
            names=Names(prefix),
            queue=queue,
            settings=settings.jobs,
        )
        retention_s = settings.prediction_log.prediction_log_retention_s
        ctx["log_retention"] = LogRetention(PredictionLogStore(sessions), retention_s=retention_s)
        ctx["stop_ticking"] = stop = asyncio.Event()
        ctx["ticker"] = asyncio.create_task(
            tick(queue, interval_s=settings.jobs.reconcile_interval_s, stop=stop), name="tasks.tick"
        )
        log.info("tasks.started", queue=queue.name, reconcile_interval_s=settings.jobs.reconcile_interval_s)

    async def shutdown(self, ctx: dict[str, Any]) -> None:
        """Stop ticking and close what ``startup`` opened."""
        ticker: asyncio.Task[None] | None = ctx.pop("ticker", None)
        stop: asyncio.Event | None = ctx.pop("stop_ticking", None)
        if stop is not None:  # NOTE: an event as well as the cancel: redis-py's wait_for can swallow a cancel
            stop.set()
        if ticker is not None:
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # we are cancelled too: do not swallow it
                    raise
        if "engine" not in ctx:  # never started, or already stopped
            return
        await ctx.pop("client").aclose()
        await ctx.pop("queue").aclose()
        await ctx.pop("engine").dispose()
        log.info("tasks.stopped")


async def tick(queue: TaskQueue, *, interval_s: float, stop: asyncio.Event | None = None) -> None:
    """Enqueue the reconciler pass of each time slot of ``interval_s``, at the slot's start, until cancelled
    or ``stop`` is set."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        slot = int(time.time() // interval_s)
        try:
            await queue.reconcile(slot=slot, expires_s=max(60.0, 3 * interval_s))
        except (RedisError, *UNAVAILABLE) as exc:  # Redis down: try again next slot
            log.warning("tasks.tick_failed", error=str(exc))
        await sleep_unless(stop, (slot + 1) * interval_s - time.time())


def worker_options(settings: Settings, *, metrics: TaskMetrics | None = None) -> dict[str, Any]:
    """The arq ``Worker`` keyword arguments (a ``WorkerSettings`` built from Settings, not a class)."""
    jobs = settings.jobs
    name = queue_name(settings.services.key_prefix)
    lifecycle = Lifecycle(settings, metrics=metrics)
    return {
        "functions": [
            func(deliver, name=DELIVER, timeout=jobs.webhook_timeout_s + DB_MARGIN_S, keep_result=0),
            # a pass's result is kept a little: a late tick of another worker then finds the slot taken
            func(
                reconcile_and_prune,  # the reconciler's pass, then the prediction log's retention
                name=RECONCILE,
                timeout=RECONCILE_TIMEOUT_S,
                max_tries=1,
                keep_result=max(1.0, 2 * jobs.reconcile_interval_s),
            ),
        ],
        "queue_name": name,
        "on_startup": lifecycle.startup,
        "on_shutdown": lifecycle.shutdown,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "max_jobs": MAX_JOBS,
        "max_tries": MAX_TRIES,
        "keep_result": 0,  # Postgres holds the outcomes; arq's results would only hold back re-enqueueing
        "poll_delay": max(0.01, min(0.5, jobs.reconcile_interval_s / 2)),
        "health_check_interval": HEALTH_CHECK_S,
        "health_check_key": f"{name}:health-check",
        "job_completion_wait": int(jobs.webhook_timeout_s) + SHUTDOWN_MARGIN_S,
    }


class TaskRunner:
    """Runs the arq worker until ``stop``; a worker that lost Redis is closed and replaced after a backoff."""

    def __init__(self, settings: Settings, *, metrics: TaskMetrics | None = None) -> None:
        self._settings = settings
        self._metrics = metrics  # outlives each arq worker: counts survive a reconnect
        self._stopping = asyncio.Event()
        self._worker: Worker | None = None

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Take no more jobs, let running ones finish (up to ``job_completion_wait``), then return from ``run``."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.handle_sig_wait_for_completion(sig)

    async def run(self) -> int:
        """Serve until stopped; 0."""
        backoff = Backoff(initial_s=0.5, max_s=RESTART_MAX_S)
        while not self._stopping.is_set():
            try:
                await self._serve()
            except (RedisError, *UNAVAILABLE) as exc:
                delay_s = backoff.next()
                log.warning("tasks.redis_failed", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay_s)
                await sleep_unless(self._stopping, delay_s)
        return 0

    async def _serve(self) -> None:
        queue = TaskQueue(connect(self._settings.services), prefix=self._settings.services.key_prefix)
        options = worker_options(self._settings, metrics=self._metrics)
        worker = Worker(redis_pool=queue.arq, handle_signals=False, **options)
        self._worker = worker
        try:
            await worker.async_run()
        except asyncio.CancelledError:  # ``stop``: arq cancels its main task once running jobs are done
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        finally:
            self._worker = None
            try:
                await worker.close()
            except asyncio.CancelledError:
                # NOTE: arq cancels a job still running when Redis went away, and ``close`` re-raises that
                # job's CancelledError: not ours (unless this task is being cancelled), so serve again.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                await _close_quietly(options, worker, queue)
            except (RedisError, *UNAVAILABLE):  # arq gave up before its on_shutdown: close ours and its pool
                await _close_quietly(options, worker, queue)


async def _close_quietly(options: dict[str, Any], worker: Worker, queue: TaskQueue) -> None:
    """Our on_shutdown and the pool, after arq's own close failed half-way (Redis gone)."""
    with contextlib.suppress(RedisError, *UNAVAILABLE):
        await options["on_shutdown"](worker.ctx)
    with contextlib.suppress(RedisError, *UNAVAILABLE):
        await queue.arq.aclose(close_connection_pool=True)


async def run_tasks(settings: Settings, *, metrics: TaskMetrics | None = None) -> int:
    """Run the task worker until SIGTERM or SIGINT (running jobs may finish first); 0."""
    runner = TaskRunner(settings, metrics=metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop, sig)
    try:
        return await runner.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
