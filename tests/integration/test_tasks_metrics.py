"""``inferq tasks``' webhook metrics from real attempts (a receiver on 127.0.0.1, Postgres deciding): each
attempt made counted once by outcome, attempts not made (already made, not pending) not at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_tasks_deliverer import drain, finished_job, make_tenant
from test_webhook_sender import Receiver, Reply

from inferq.settings import JobsSettings, Settings
from inferq.store.deliveries import DeliveryStore
from inferq.streams.tasks import TaskQueue
from inferq.webhooks.sender import new_client
from inferq.webhooks.signatures import new_secret
from inferq.workers.deliverer import Deliverer
from inferq.workers.task_metrics import ATTEMPT_RESULTS, TaskMetrics

pytestmark = pytest.mark.integration

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[TaskQueue]:
    tasks = TaskQueue(redis_client, prefix=settings.services.key_prefix)
    yield tasks
    await drain(tasks)
    await tasks.aclose()


async def test_attempts_are_counted_by_outcome(
    receiver: Receiver, queue: TaskQueue, sessionmaker: Sessions, settings: Settings
) -> None:
    tenant = await make_tenant(sessionmaker)
    deliveries = DeliveryStore(sessionmaker, new_secret=new_secret)
    _, flaky = await finished_job(sessionmaker, tenant=tenant, url=receiver.url("/flaky"))
    _, gone = await finished_job(sessionmaker, tenant=tenant, url=receiver.url("/gone"))
    _, down = await finished_job(sessionmaker, tenant=tenant, url=receiver.url("/down"))
    receiver.replies = [Reply(status=500), Reply(status=204), Reply(status=410), Reply(status=500), Reply(status=502)]
    metrics = TaskMetrics()

    def deliverer(client: httpx.AsyncClient, max_attempts: int) -> Deliverer:
        jobs: JobsSettings = msgspec.structs.replace(
            settings.jobs, webhook_retry_scale=0.001, webhook_timeout_s=2.0, webhook_max_attempts=max_attempts
        )
        return Deliverer(
            deliveries=deliveries, queue=queue, client=client, jobs=jobs, allow_private=True, metrics=metrics
        )

    async with new_client() as client:
        patient, short = deliverer(client, 8), deliverer(client, 2)
        assert await patient.attempt(flaky, n=1) == "pending"  # 500: retrying
        assert await patient.attempt(flaky, n=2) == "succeeded"  # 204: delivered
        assert await patient.attempt(flaky, n=2) is None  # arq ran it twice: nothing sent, nothing counted
        assert await patient.attempt(gone, n=1) == "disabled"  # 410
        assert await short.attempt(down, n=1) == "pending"  # 500, one attempt left: retrying
        assert await short.attempt(down, n=2) == "failed"  # 502 on the last attempt: gave up
        assert await short.attempt(down, n=3) is None  # not pending any more

    counted = {r: metrics.registry.get_sample_value("inferq_webhook_attempts_total", {"outcome": r}) for r in
               ATTEMPT_RESULTS}  # fmt: skip
    assert counted == {"delivered": 1, "retrying": 2, "gave_up": 1, "disabled": 1}
    assert metrics.registry.get_sample_value("inferq_webhook_attempt_duration_seconds_count") == 5
    assert len(receiver.requests) == 5
