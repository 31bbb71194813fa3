"""The ``deliver`` arq job against a real receiver on 127.0.0.1: retries to success, 410, timeouts, rotation, reruns.

Jobs are run the way arq runs them (the queued job's function, args and kwargs, decoded with our
serializer), one at a time, without a worker process.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import Job
from arq.worker import Retry
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook
from test_webhook_sender import Receiver, Reply

from inferq.contracts.jobs import NewChunk, NewJob, RowOutcome, WebhookSpec
from inferq.contracts.predictions import Prediction
from inferq.settings import Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.deliveries import DeliveryStore
from inferq.store.jobs import JobStore
from inferq.store.tables import AttemptRow, TenantRow
from inferq.streams.tasks import DELIVER, TaskQueue, deserialize
from inferq.webhooks.sender import new_client
from inferq.webhooks.signatures import new_secret
from inferq.workers.deliverer import Deliverer, deliver

pytestmark = pytest.mark.integration

Sessions = async_sessionmaker[AsyncSession]
SCALE = 0.001  # the schedule's 5 s wait before attempt 2 becomes 5 ms


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def task_settings(settings: Settings) -> Settings:
    jobs = msgspec.structs.replace(settings.jobs, webhook_retry_scale=SCALE, webhook_timeout_s=1.0)
    return msgspec.structs.replace(settings, jobs=jobs, webhook_allow_private=True)


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[TaskQueue]:
    tasks = TaskQueue(redis_client, prefix=settings.services.key_prefix)
    yield tasks
    await drain(tasks)
    await tasks.aclose()


@pytest.fixture
def deliveries(sessionmaker: Sessions) -> DeliveryStore:
    return DeliveryStore(sessionmaker, new_secret=new_secret)


@pytest.fixture
async def deliverer(task_settings: Settings, deliveries: DeliveryStore, queue: TaskQueue) -> AsyncIterator[Deliverer]:
    async with new_client() as client:
        yield Deliverer(deliveries=deliveries, queue=queue, client=client, jobs=task_settings.jobs, allow_private=True)


@pytest.fixture
async def tenant(sessionmaker: Sessions) -> str:
    return await make_tenant(sessionmaker)


async def make_tenant(sessionmaker: Sessions) -> str:
    name = f"t-{secrets.token_hex(6)}"
    async with sessionmaker.begin() as session:
        await session.execute(insert(TenantRow).values(id=name, name=name))
    return name


async def drain(queue: TaskQueue) -> None:
    """Remove every job of this run's queue and arq's keys for them (arq keeps those outside our prefix)."""
    for raw in await queue.arq.zrange(queue.name, 0, -1):
        job_id = raw.decode()
        prefixes = (job_key_prefix, result_key_prefix, retry_key_prefix, in_progress_key_prefix)
        await queue.arq.delete(*(prefix + job_id for prefix in prefixes))
    await queue.arq.delete(queue.name)


async def finished_job(sessionmaker: Sessions, *, tenant: str, url: str) -> tuple[str, str]:
    """A one-row job with a webhook, succeeded: ``(job_id, delivery_id)`` of its ``job.succeeded`` delivery."""
    store = JobStore(sessionmaker)
    job = NewJob(tenant=tenant, model="iris", version=1, completion_window_s=3600.0, webhook=WebhookSpec(url=url))

    async def chunks() -> AsyncIterator[NewChunk]:
        yield NewChunk(seq=0, rows=1, indexes=(0,), custom_ids=("row-0",), inputs=b"opaque")

    record, _ = await store.create(job, chunks())
    events = await store.complete_chunk(record.id, 0, outcomes=[RowOutcome(prediction=Prediction(label=1))])
    (delivery_id,) = [e.delivery_id for e in events if e.delivery_id is not None]
    return record.id, delivery_id


async def queued(queue: TaskQueue, delivery_id: str) -> list[tuple[str, dict[str, Any], float]]:
    """The delivery's queued arq jobs as ``(job_id, info, when due as a Unix time)``, soonest first."""
    found = []
    for raw, score in await queue.arq.zrange(queue.name, 0, -1, withscores=True):
        job_id = raw.decode()
        if job_id.startswith(f"{DELIVER}:{delivery_id}:"):
            info = await Job(job_id, queue.arq, _queue_name=queue.name, _deserializer=deserialize).info()
            assert info is not None
            described = {"function": info.function, "args": list(info.args), "kwargs": info.kwargs}
            found.append((job_id, described, score / 1000))
    return found


async def run_next(queue: TaskQueue, deliverer: Deliverer, delivery_id: str) -> str | None:
    """Take the delivery's one queued job off the queue and run it as arq would; None when none is queued."""
    jobs = await queued(queue, delivery_id)
    if not jobs:
        return None
    ((job_id, job, _),) = jobs
    await queue.arq.zrem(queue.name, job_id)
    await queue.arq.delete(job_key_prefix + job_id)
    assert job["function"] == "deliver"
    result: str = await deliver({"deliverer": deliverer, "job_try": 1}, *job["args"], **job["kwargs"])
    return result


async def test_500_three_times_then_200_is_one_delivery_made_in_four_signed_attempts(
    receiver: Receiver, deliverer: Deliverer, deliveries: DeliveryStore, queue: TaskQueue, sessionmaker: Sessions,
    tenant: str,
) -> None:  # fmt: skip
    job_id, delivery_id = await finished_job(sessionmaker, tenant=tenant, url=receiver.url("/hooks/inferq"))
    receiver.replies = [Reply(status=500, body=b"down")] * 3 + [Reply(status=200, body=b"ok")]
    secret, _ = await deliveries.secret(tenant)
    assert await queue.deliver(delivery_id, attempt=1) is True  # as the API does after its commit
    assert await queue.deliver(delivery_id, attempt=1) is False  # arq dedupes by job id
    await queue.schedule(delivery_id, 1)  # the callback form the job workers use: queued once all the same

    outcomes = []
    while (outcome := await run_next(queue, deliverer, delivery_id)) is not None:
        outcomes.append(outcome)

    assert outcomes == ["pending", "pending", "pending", "succeeded"]
    (view,) = await deliveries.for_job(tenant, job_id)
    assert (view.status, view.attempts, view.next_attempt_at) == ("succeeded", 4, None)
    assert [(a.n, a.status, a.excerpt) for a in view.history] == [
        (1, 500, "down"), (2, 500, "down"), (3, 500, "down"), (4, 200, "ok"),
    ]  # fmt: skip
    assert len(receiver.requests) == 4
    assert {r.headers["webhook-id"] for r in receiver.requests} == {view.event_id}
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes on every attempt
    for request in receiver.requests:
        assert (request.method, request.target) == ("POST", "/hooks/inferq")
        event = Webhook(secret).verify(request.body, request.headers)
        assert (event["type"], event["data"]["id"], event["data"]["status"]) == (
            "job.succeeded", job_id, "succeeded",
        )  # fmt: skip
    assert json.loads(receiver.requests[0].body)["data"]["counts"] == {"total": 1, "succeeded": 1, "failed": 0}


async def test_the_next_attempt_is_queued_with_its_scaled_delay_and_retry_after_is_honoured(
    receiver: Receiver, deliverer: Deliverer, deliveries: DeliveryStore, queue: TaskQueue, sessionmaker: Sessions,
    tenant: str,
) -> None:  # fmt: skip
    job_id, delivery_id = await finished_job(sessionmaker, tenant=tenant, url=receiver.url("/h"))
    receiver.replies = [Reply(status=503, headers={"retry-after": "120"})]
    before = dt.datetime.now(dt.UTC)
    assert await deliverer.attempt(delivery_id, n=1) == "pending"

    ((job_id_2, job, due_at),) = await queued(queue, delivery_id)
    assert job_id_2 == f"deliver:{delivery_id}:2"
    assert job == {"function": "deliver", "args": [delivery_id], "kwargs": {"attempt": 2}}
    # the schedule says 5 s (± 10 %), the receiver 120 s; scaled by 0.001: 120 ms, not 5 ms
    assert 0.119 <= due_at - before.timestamp() < 1.0
    (view,) = await deliveries.for_job(tenant, job_id)
    assert view.next_attempt_at is not None
    assert 0.119 <= (view.next_attempt_at - before).total_seconds() < 1.0
    assert await queue.known(delivery_id, 2) is True
    assert await queue.known(delivery_id, 3) is False


async def test_410_disables_the_endpoint_and_schedules_nothing(
    receiver: Receiver, deliverer: Deliverer, deliveries: DeliveryStore, queue: TaskQueue, sessionmaker: Sessions,
    tenant: str,
) -> None:  # fmt: skip
    url = receiver.url("/gone")
    job_id, delivery_id = await finished_job(sessionmaker, tenant=tenant, url=url)
    other_job, other_delivery = await finished_job(sessionmaker, tenant=tenant, url=url)
    receiver.replies = [Reply(status=410, body=b"bye")]

    assert await deliverer.attempt(delivery_id, n=1) == "disabled"

    assert await queued(queue, delivery_id) == []
    (view,) = await deliveries.for_job(tenant, job_id)
    assert (view.status, view.last_status, view.next_attempt_at) == ("disabled", 410, None)
    (other,) = await deliveries.for_job(tenant, other_job)
    assert other.status == "disabled"  # pending deliveries to that endpoint are disabled with it
    assert await deliverer.attempt(other_delivery, n=1) is None  # and never attempted
    assert len(receiver.requests) == 1


async def test_a_hanging_receiver_is_a_timed_out_attempt_retried_later(
    receiver: Receiver, deliverer: Deliverer, deliveries: DeliveryStore, queue: TaskQueue, sessionmaker: Sessions,
    tenant: str,
) -> None:  # fmt: skip
    job_id, delivery_id = await finished_job(sessionmaker, tenant=tenant, url=receiver.url("/slow"))
    receiver.replies = [Reply(hang=True)]
    started = time.monotonic()

    assert await deliverer.attempt(delivery_id, n=1) == "pending"

    assert 1.0 <= time.monotonic() - started < 3.0  # webhook_timeout_s = 1
    (view,) = await deliveries.for_job(tenant, job_id)
    ((n, status, error),) = [(a.n, a.status, a.error) for a in view.history]
    assert (n, status, error, view.status) == (1, None, "timeout", "pending")
    assert await queue.known(delivery_id, 2) is True


async def test_the_last_attempt_failing_fails_the_delivery(
    receiver: Receiver, task_settings: Settings, deliveries: DeliveryStore, queue: TaskQueue, sessionmaker: Sessions,
    tenant: str,
) -> None:  # fmt: skip
    jobs = msgspec.structs.replace(task_settings.jobs, webhook_max_attempts=2)
    _, delivery_id = await finished_job(sessionmaker, tenant=tenant, url=receiver.url("/down"))
    receiver.replies = [Reply(status=500), Reply(status=502)]
    async with new_client() as client:
        twice = Deliverer(deliveries=deliveries, queue=queue, client=client, jobs=jobs, allow_private=True)
        assert await twice.attempt(delivery_id, n=1) == "pending"
        assert await twice.attempt(delivery_id, n=2) == "failed"
    # attempt 1 scheduled attempt 2 (run directly here); the failed 2nd scheduled nothing
    assert [job_id for job_id, _, _ in await queued(queue, delivery_id)] == [f"deliver:{delivery_id}:2"]
    assert await queue.known(delivery_id, 3) is False
    assert len(receiver.requests) == 2


async def test_running_an_attempt_again_sends_and_records_nothing(
    receiver: Receiver, deliverer: Deliverer, queue: TaskQueue, sessionmaker: Sessions, tenant: str
) -> None:
    _, delivery_id = await finished_job(sessionmaker, tenant=tenant, url=receiver.url("/once"))
    receiver.replies = [Reply(status=500)]
    ctx = {"deliverer": deliverer, "job_try": 1}

    assert await deliver(ctx, delivery_id, attempt=1) == "pending"
    assert await deliver(ctx, delivery_id, attempt=1) == "skipped"  # arq ran it twice (a worker died)
    assert await deliver(ctx, delivery_id, attempt=3) == "skipped"  # not the next attempt
    assert await deliver(ctx, "whd_unknown", attempt=1) == "skipped"  # deleted by retention

    assert len(receiver.requests) == 1
    async with sessionmaker() as session:
        attempts = await session.scalar(select(func.count()).where(AttemptRow.delivery_id == delivery_id))
    assert attempts == 1


async def test_during_a_rotation_each_attempt_carries_both_signatures(
    receiver: Receiver, deliverer: Deliverer, deliveries: DeliveryStore, sessionmaker: Sessions, tenant: str
) -> None:
    old, _ = await deliveries.secret(tenant)
    new, previous = await deliveries.secret(tenant, rotate=True)
    assert previous == old != new
    _, delivery_id = await finished_job(sessionmaker, tenant=tenant, url=receiver.url("/rotating"))

    assert await deliverer.attempt(delivery_id, n=1) == "succeeded"

    (request,) = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver holding either secret verifies
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "job.succeeded"


async def test_postgres_unavailable_makes_arq_retry_the_attempt_with_backoff(
    task_settings: Settings, queue: TaskQueue
) -> None:
    engine = create_engine("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=1.0)
    try:
        down = DeliveryStore(create_sessionmaker(engine), new_secret=new_secret)
        async with new_client() as client:
            deliverer = Deliverer(
                deliveries=down, queue=queue, client=client, jobs=task_settings.jobs, allow_private=True
            )
            for job_try, defer_ms in ((1, 2000), (2, 4000), (9, 60_000)):
                with pytest.raises(Retry) as caught:
                    await deliver({"deliverer": deliverer, "job_try": job_try}, "whd_any", attempt=1)
                assert caught.value.defer_score == defer_ms
    finally:
        await engine.dispose()
