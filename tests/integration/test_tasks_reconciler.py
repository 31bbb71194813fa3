"""The reconciler against real Redis and Postgres: lost chunks, overdue jobs, lost deliveries, retention, outages.

The reconciler acts on the whole database, which other tests share: every assertion is about this
test's own jobs, streams and deliveries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_tasks_deliverer import drain
from test_webhook_sender import Receiver

from inferq.contracts.jobs import JobRecord, NewChunk, NewJob, RowOutcome, WebhookSpec
from inferq.contracts.messages import InferRequest, JobChunkRef
from inferq.contracts.names import Names
from inferq.contracts.predictions import Prediction, Tensor
from inferq.embedded import EmbeddedRedis
from inferq.errors import JobNotFound
from inferq.settings import JobsSettings, Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.deliveries import DeliveryStore
from inferq.store.jobs import JobStore
from inferq.store.tables import JobChunkRow, JobEventRow, JobRow, TenantRow
from inferq.streams.chunks import enqueue_chunks
from inferq.streams.partition import Partition
from inferq.streams.tasks import TaskQueue
from inferq.webhooks.signatures import new_secret
from inferq.workers.reconciler import Reconciler, ReconcileReport, reconcile
from inferq.workers.tasks import TaskRunner

pytestmark = pytest.mark.integration

Sessions = async_sessionmaker[AsyncSession]
HOOK = "https://hooks.example.com/inferq"
ALL_STEPS = ("requeued", "expired", "scheduled", "deleted")
_decoder = msgspec.msgpack.Decoder(InferRequest)


@pytest.fixture
def jobs_settings(settings: Settings) -> JobsSettings:
    return msgspec.structs.replace(settings.jobs, stranded_after_s=0.0, job_retention_s=86_400.0)


@pytest.fixture
def names(settings: Settings) -> Names:
    return Names(settings.services.key_prefix)


@pytest.fixture
async def queue(redis_client: aioredis.Redis, names: Names) -> AsyncIterator[TaskQueue]:
    tasks = TaskQueue(redis_client, prefix=names.prefix)
    yield tasks
    await drain(tasks)
    await tasks.aclose()


@pytest.fixture
def store(sessionmaker: Sessions) -> JobStore:
    return JobStore(sessionmaker)


@pytest.fixture
def deliveries(sessionmaker: Sessions) -> DeliveryStore:
    return DeliveryStore(sessionmaker, new_secret=new_secret)


@pytest.fixture
def reconciler(
    store: JobStore, deliveries: DeliveryStore, redis_client: aioredis.Redis, names: Names, queue: TaskQueue,
    jobs_settings: JobsSettings,
) -> Reconciler:  # fmt: skip
    return Reconciler(
        jobs=store, deliveries=deliveries, redis=redis_client, names=names, queue=queue, settings=jobs_settings,
        grace_s=0.0, batch=100_000,
    )  # fmt: skip


@pytest.fixture
async def tenant(sessionmaker: Sessions) -> str:
    name = f"t-{secrets.token_hex(6)}"
    async with sessionmaker.begin() as session:
        await session.execute(insert(TenantRow).values(id=name, name=name))
    return name


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def chunk(seq: int) -> NewChunk:
    """One row of four float32 features, encoded as the API encodes chunk inputs."""
    tensor = Tensor(name="X", dtype="float32", shape=(1, 4), data=np.full((1, 4), seq, np.float32).tobytes())
    inputs = msgspec.msgpack.encode((tensor,))
    return NewChunk(seq=seq, rows=1, indexes=(seq,), custom_ids=(f"row-{seq}",), inputs=inputs)


async def new_job(
    store: JobStore, tenant: str, *, chunks: int = 1, model: str = "iris", hook: bool = False, url: str = HOOK
) -> JobRecord:
    webhook = WebhookSpec(url=url) if hook else None
    job = NewJob(tenant=tenant, model=model, version=1, completion_window_s=3600.0, webhook=webhook)

    async def stream() -> AsyncIterator[NewChunk]:
        for seq in range(chunks):
            yield chunk(seq)

    record, _ = await store.create(job, stream())
    return record


async def finish(store: JobStore, job: JobRecord) -> None:
    for seq in range(job.chunks_total):
        await store.complete_chunk(job.id, seq, outcomes=[RowOutcome(prediction=Prediction(label=seq))])


async def set_job(sessionmaker: Sessions, job_id: str, **values: object) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(update(JobRow).where(JobRow.id == job_id).values(**values))


async def entry_ids(sessionmaker: Sessions, job_id: str) -> dict[int, str | None]:
    async with sessionmaker() as session:
        rows = await session.execute(select(JobChunkRow.seq, JobChunkRow.entry_id).where(JobChunkRow.job_id == job_id))
        return {seq: entry_id for seq, entry_id in rows}


async def count_events(sessionmaker: Sessions, job_id: str, event_type: str) -> int:
    stmt = select(func.count()).where(JobEventRow.job_id == job_id, JobEventRow.type == event_type)
    async with sessionmaker() as session:
        return await session.scalar(stmt) or 0


async def test_a_chunk_whose_stream_entry_vanished_is_enqueued_again_exactly_once(
    reconciler: Reconciler, store: JobStore, sessionmaker: Sessions, redis_client: aioredis.Redis, names: Names,
    tenant: str,
) -> None:  # fmt: skip
    model = f"m-{secrets.token_hex(4)}"
    bulk = Partition.of(names, model=model, version=1).bulk
    job = await new_job(store, tenant, chunks=3, model=model)
    enqueued = await enqueue_chunks(redis_client, names, await store.chunks_to_enqueue(job.id), now=now())
    await store.mark_enqueued(job.id, [(seq, entry) for _, seq, entry in enqueued])
    first = await entry_ids(sessionmaker, job.id)
    assert await redis_client.xdel(bulk, first[1]) == 1  # e.g. Redis restarted without its data

    requeued = await reconciler.requeue_stranded(now())
    again = await reconciler.requeue_stranded(now())

    assert requeued >= 1  # this job's chunk 1 (and any stranded chunk other tests left behind)
    entries = await redis_client.xrange(bulk)
    assert len(entries) == 3
    latest = await entry_ids(sessionmaker, job.id)
    assert (latest[0], latest[2]) == (first[0], first[2])
    assert latest[1] not in (None, first[1])
    assert entries[-1][0].decode() == latest[1]
    message = _decoder.decode(entries[-1][1][b"m"])
    assert (message.id, message.rows, message.job) == (f"{job.id}:1", 1, JobChunkRef(job_id=job.id, seq=1))
    assert again == 0  # every entry is there now
    assert len(await redis_client.xrange(bulk)) == 3


async def test_chunks_that_never_reached_a_stream_are_enqueued(
    reconciler: Reconciler, store: JobStore, sessionmaker: Sessions, redis_client: aioredis.Redis, names: Names,
    tenant: str,
) -> None:  # fmt: skip
    model = f"m-{secrets.token_hex(4)}"
    job = await new_job(store, tenant, chunks=2, model=model)  # the API died before XADD

    await reconciler.requeue_stranded(now() + dt.timedelta(seconds=1))

    bulk = Partition.of(names, model=model, version=1).bulk
    entries = [entry.decode() for entry, _ in await redis_client.xrange(bulk)]
    assert sorted(entries) == sorted(e for e in (await entry_ids(sessionmaker, job.id)).values() if e)
    assert len(entries) == 2


async def test_chunks_of_finished_jobs_are_left_alone(
    reconciler: Reconciler, store: JobStore, redis_client: aioredis.Redis, names: Names, tenant: str
) -> None:
    model = f"m-{secrets.token_hex(4)}"
    job = await new_job(store, tenant, chunks=2, model=model)
    await store.cancel(tenant, job.id)

    await reconciler.requeue_stranded(now() + dt.timedelta(seconds=1))

    assert await redis_client.exists(Partition.of(names, model=model, version=1).bulk) == 0


async def test_a_job_past_its_deadline_expires_with_exactly_one_event_and_its_delivery_is_scheduled(
    reconciler: Reconciler, store: JobStore, deliveries: DeliveryStore, queue: TaskQueue, sessionmaker: Sessions,
    tenant: str,
) -> None:  # fmt: skip
    late = await new_job(store, tenant, hook=True)
    on_time = await new_job(store, tenant, hook=True)
    await set_job(sessionmaker, late.id, deadline_at=now() - dt.timedelta(seconds=5))

    assert await reconciler.expire_overdue(now()) >= 1
    await reconciler.expire_overdue(now())

    assert (await store.get(tenant, late.id)).status == "expired"
    assert (await store.get(tenant, on_time.id)).status == "queued"
    assert await count_events(sessionmaker, late.id, "job.expired") == 1
    (delivery,) = await deliveries.for_job(tenant, late.id)
    assert (delivery.type, delivery.status) == ("job.expired", "pending")
    assert await queue.known(delivery.id, 1) is True
    assert await deliveries.for_job(tenant, on_time.id) == []


async def test_pending_deliveries_unknown_to_arq_are_scheduled_once_due(
    reconciler: Reconciler, store: JobStore, deliveries: DeliveryStore, queue: TaskQueue, tenant: str
) -> None:
    lost = await new_job(store, tenant, hook=True)
    retried = await new_job(store, tenant, hook=True)
    later = await new_job(store, tenant, hook=True)
    for job in (lost, retried, later):
        await finish(store, job)
    (lost_delivery,) = await deliveries.for_job(tenant, lost.id)
    (retried_delivery,) = await deliveries.for_job(tenant, retried.id)
    (later_delivery,) = await deliveries.for_job(tenant, later.id)
    for delivery, due_in_s in ((retried_delivery, -1), (later_delivery, 3600)):
        next_at = now() + dt.timedelta(seconds=due_in_s)
        await deliveries.record_attempt(
            delivery.id,
            n=1,
            status=500,
            error="HTTP 500",
            excerpt="",
            duration_ms=1.0,
            next_attempt_at=next_at,
            ok=False,
        )
    assert not await queue.known(lost_delivery.id, 1)

    first = await reconciler.schedule_lost_deliveries(now() + dt.timedelta(seconds=1))
    second = await reconciler.schedule_lost_deliveries(now() + dt.timedelta(seconds=1))

    assert first >= 2
    assert await queue.known(lost_delivery.id, 1) is True
    assert await queue.known(retried_delivery.id, 2) is True  # the attempt after the one recorded
    assert await queue.known(later_delivery.id, 2) is False  # not due for an hour
    mine = {lost_delivery.id, retried_delivery.id, later_delivery.id}
    queued = [m.decode() for m in await queue.arq.zrange(queue.name, 0, -1)]
    ours = [m for m in queued if m.split(":")[1] in mine]
    assert sorted(ours) == sorted([f"deliver:{lost_delivery.id}:1", f"deliver:{retried_delivery.id}:2"])
    assert second == 0  # arq already knew every one of them


async def test_retention_deletes_only_jobs_finished_before_the_cutoff(
    reconciler: Reconciler, store: JobStore, sessionmaker: Sessions, tenant: str
) -> None:
    old = await new_job(store, tenant, chunks=2, hook=True)
    recent = await new_job(store, tenant)
    running = await new_job(store, tenant, chunks=2)
    await finish(store, old)
    await finish(store, recent)
    await store.complete_chunk(running.id, 0, outcomes=[RowOutcome(prediction=Prediction(label=0))])
    await set_job(sessionmaker, old.id, finished_at=now() - dt.timedelta(days=2))

    assert await reconciler.delete_old_jobs(now()) >= 1

    with pytest.raises(JobNotFound):
        await store.get(tenant, old.id)
    assert await entry_ids(sessionmaker, old.id) == {}  # its chunks (and results, events, deliveries) went with it
    assert await count_events(sessionmaker, old.id, "job.succeeded") == 0
    assert (await store.get(tenant, recent.id)).status == "succeeded"
    assert (await store.get(tenant, running.id)).status == "running"


async def test_a_pass_reports_every_step_and_the_arq_job_runs_one(
    reconciler: Reconciler, store: JobStore, sessionmaker: Sessions, tenant: str
) -> None:
    late = await new_job(store, tenant)
    await set_job(sessionmaker, late.id, deadline_at=now() - dt.timedelta(seconds=5))

    report = await reconcile({"reconciler": reconciler}, 7)

    assert isinstance(report, ReconcileReport)
    assert report.failed == ()
    assert report.expired >= 1
    assert (await store.get(tenant, late.id)).status == "expired"


async def test_one_reconciler_pass_per_time_slot_is_queued(queue: TaskQueue) -> None:
    slot = 10**9 + secrets.randbelow(10**6)
    assert await queue.reconcile(slot=slot, expires_s=60) is True
    assert await queue.reconcile(slot=slot, expires_s=60) is False  # another task worker ticked too
    assert await queue.reconcile(slot=slot + 1, expires_s=60) is True


async def test_with_redis_down_the_postgres_steps_still_run_and_nothing_is_lost(
    reconciler: Reconciler, store: JobStore, deliveries: DeliveryStore, queue: TaskQueue, names: Names,
    jobs_settings: JobsSettings, sessionmaker: Sessions, tenant: str,
) -> None:  # fmt: skip
    late = await new_job(store, tenant, hook=True)
    await set_job(sessionmaker, late.id, deadline_at=now() - dt.timedelta(seconds=5))
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        offline = Reconciler(
            jobs=store, deliveries=deliveries, redis=dead, names=names, queue=TaskQueue(dead, prefix=names.prefix),
            settings=jobs_settings, grace_s=0.0, batch=100_000,
        )  # fmt: skip
        report = await offline.run()
    finally:
        await dead.aclose()

    # the job expired (Postgres) though its delivery could not be queued (Redis)
    assert report.failed == ("requeued", "expired", "scheduled")
    assert (await store.get(tenant, late.id)).status == "expired"
    (delivery,) = await deliveries.for_job(tenant, late.id)
    assert await queue.known(delivery.id, 1) is False

    await reconciler.schedule_lost_deliveries(now())  # the next pass with Redis back

    assert await queue.known(delivery.id, 1) is True


async def test_with_postgres_down_every_step_fails_and_the_pass_returns(
    store: JobStore, deliveries: DeliveryStore, redis_client: aioredis.Redis, queue: TaskQueue, names: Names,
    jobs_settings: JobsSettings,
) -> None:  # fmt: skip
    engine = create_engine("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=1.0)
    try:
        sessions = create_sessionmaker(engine)
        offline = Reconciler(
            jobs=JobStore(sessions), deliveries=DeliveryStore(sessions, new_secret=new_secret), redis=redis_client,
            names=names, queue=queue, settings=jobs_settings,
        )  # fmt: skip
        report = await offline.run()
    finally:
        await engine.dispose()

    assert report == ReconcileReport(failed=ALL_STEPS)
    assert await redis_client.exists(f"{names.prefix}:reconciler:requeue") == 0  # the lock was released


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


async def test_the_task_worker_outlives_a_redis_wipe_and_delivers_what_was_lost_meanwhile(
    settings: Settings, fresh_database: str, tmp_path: Path
) -> None:
    engine = create_engine(fresh_database)
    sessions = create_sessionmaker(engine)
    store, deliveries = JobStore(sessions), DeliveryStore(sessions, new_secret=new_secret)
    tenant = "default"  # seeded by the migration
    server = EmbeddedRedis(tmp_path / "redis", persist=False).start()
    receiver = Receiver()
    await receiver.start()
    jobs = msgspec.structs.replace(
        settings.jobs, reconcile_interval_s=0.1, webhook_retry_scale=0.001, webhook_timeout_s=1.0
    )
    services = msgspec.structs.replace(settings.services, redis_url=server.url, database_url=fresh_database)
    runner = TaskRunner(msgspec.structs.replace(settings, services=services, jobs=jobs, webhook_allow_private=True))
    running = asyncio.create_task(runner.run())
    delivered: dict[str, str] = {}  # job id → status

    async def got(job: JobRecord) -> bool:
        (view,) = await deliveries.for_job(tenant, job.id)
        delivered[job.id] = view.status
        return any(json.loads(r.body)["data"]["id"] == job.id for r in receiver.requests) and view.status == "succeeded"

    try:
        before = await new_job(store, tenant, hook=True, url=receiver.url("/hook"))
        await finish(store, before)
        await eventually(lambda: got(before))  # found by the reconciler (nothing scheduled it)

        server.stop()  # Redis goes away, and comes back empty
        during = await new_job(store, tenant, hook=True, url=receiver.url("/hook"))
        await finish(store, during)
        await asyncio.sleep(0.5)
        server.start()

        await eventually(lambda: got(during))
    finally:
        runner.stop()
        assert await asyncio.wait_for(running, timeout=30) == 0
        await receiver.stop()
        server.stop()
        await engine.dispose()
    assert delivered == {before.id: "succeeded", during.id: "succeeded"}
    assert len(receiver.requests) == 2  # the worker had nothing else to do in its own database
