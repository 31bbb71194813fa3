"""Webhook deliveries: event filters, due work, attempts and retries, 410 disabling, replays, secret rotation."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest
from test_store_jobs_kit import Sessions, Tenants, count, new_job, stream, success, valid_chunk

from inferq.contracts.jobs import EventFilter, JobRecord, WebhookSpec
from inferq.errors import DeliveryNotFound, JobNotFound
from inferq.store.deliveries import DeliveryStore
from inferq.store.jobs import JobStore
from inferq.store.tables import AttemptRow, DeliveryRow

pytestmark = pytest.mark.integration

HOOK = "https://hooks.example.com/inferq"


@pytest.fixture
def deliveries(sessionmaker: Sessions) -> DeliveryStore:
    numbers = itertools.count(1)
    return DeliveryStore(sessionmaker, new_secret=lambda: f"whsec_{next(numbers)}")


def soon(seconds: float = 0) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


async def finished_job(
    store: JobStore, tenant: str, *, url: str = HOOK, events: tuple[EventFilter, ...] = ("completed",)
) -> JobRecord:
    """A one-row job with a webhook, finished (succeeded)."""
    webhook = WebhookSpec(url=url, events=events)
    job, _ = await store.create(new_job(tenant, webhook=webhook), stream(valid_chunk(0, [0])))
    await store.complete_chunk(job.id, 0, outcomes=[success(1)])
    return job


async def test_the_event_filter_decides_which_events_get_a_delivery(
    store: JobStore, sessionmaker: Sessions, tenant: str
) -> None:
    completed = await finished_job(store, tenant)
    started = await finished_job(store, tenant, events=("job.started",))
    both = await finished_job(store, tenant, events=("job.started", "job.succeeded"))
    failed_only = await finished_job(store, tenant, events=("job.failed",))
    assert [await count(sessionmaker, DeliveryRow, job_id=j.id) for j in (completed, started, both, failed_only)] == [
        1,
        1,
        2,
        0,
    ]


async def test_a_delivery_is_retried_until_it_succeeds_and_logs_every_attempt(
    store: JobStore, deliveries: DeliveryStore, sessionmaker: Sessions, tenant: str
) -> None:
    job = await finished_job(store, tenant)
    (log,) = await deliveries.for_job(tenant, job.id)
    assert (log.type, log.url, log.status, log.attempts, log.history) == ("job.succeeded", HOOK, "pending", 0, ())
    assert log.id in await deliveries.due(soon(1), limit=10**6)

    task = await deliveries.load(log.id)
    assert (task.event_id, task.url, task.tenant, task.job_id, task.attempts) == (log.event_id, HOOK, tenant, job.id, 0)
    body = json.loads(task.body)
    assert set(body) == {"type", "timestamp", "data"}
    assert (body["type"], body["data"]["id"], body["data"]["status"]) == ("job.succeeded", job.id, "succeeded")
    assert (await deliveries.load(log.id)).body == task.body  # the same bytes on every attempt

    retry_at = soon(3600)
    status = await deliveries.record_attempt(
        log.id, n=1, status=500, error=None, excerpt="x" * 1000, duration_ms=12.5, next_attempt_at=retry_at, ok=False
    )
    assert status == "pending"
    assert log.id not in await deliveries.due(soon(1), limit=10**6)
    assert log.id in await deliveries.due(retry_at, limit=10**6)
    assert log.id in await deliveries.pending_unknown(retry_at + dt.timedelta(seconds=61), grace_s=60, limit=10**6)
    assert log.id not in await deliveries.pending_unknown(retry_at, grace_s=60, limit=10**6)
    again = await deliveries.record_attempt(
        log.id, n=1, status=502, error=None, excerpt=None, duration_ms=1.0, next_attempt_at=retry_at, ok=False
    )
    assert again == "pending"  # attempt 1 was recorded already: nothing changes
    assert await count(sessionmaker, AttemptRow, delivery_id=log.id) == 1

    status = await deliveries.record_attempt(
        log.id, n=2, status=204, error=None, excerpt="", duration_ms=3.0, next_attempt_at=None, ok=True
    )
    assert status == "succeeded"
    (log,) = await deliveries.for_job(tenant, job.id)
    assert (log.status, log.attempts, log.next_attempt_at, log.last_status) == ("succeeded", 2, None, 204)
    assert [(a.n, a.status, a.duration_ms) for a in log.history] == [(1, 500, 12.5), (2, 204, 3.0)]
    assert log.history[0].excerpt == "x" * 256
    assert log.id not in await deliveries.due(soon(10**6), limit=10**6)


async def test_a_delivery_without_a_next_attempt_fails(store: JobStore, deliveries: DeliveryStore, tenant: str) -> None:
    job = await finished_job(store, tenant)
    (log,) = await deliveries.for_job(tenant, job.id)
    status = await deliveries.record_attempt(
        log.id, n=1, status=None, error="connect timeout", excerpt=None, duration_ms=15000.0,
        next_attempt_at=None, ok=False,
    )  # fmt: skip
    assert status == "failed"
    (log,) = await deliveries.for_job(tenant, job.id)
    assert (log.status, log.last_status, log.last_error, log.next_attempt_at) == (
        "failed",
        None,
        "connect timeout",
        None,
    )


async def test_410_disables_the_endpoint_until_a_replay(
    store: JobStore, deliveries: DeliveryStore, tenant: str
) -> None:
    first = await finished_job(store, tenant)
    second = await finished_job(store, tenant)
    elsewhere = await finished_job(store, tenant, url=HOOK + "/other")
    (gone,) = await deliveries.for_job(tenant, first.id)
    status = await deliveries.record_attempt(
        gone.id, n=1, status=410, error=None, excerpt="bye", duration_ms=2.0, next_attempt_at=None, ok=False, gone=True
    )
    assert status == "disabled"
    assert [d.status for d in await deliveries.for_job(tenant, second.id)] == ["disabled"]  # pending → disabled
    assert [d.status for d in await deliveries.for_job(tenant, elsewhere.id)] == ["pending"]
    later = await finished_job(store, tenant)  # a new event to the disabled endpoint is never attempted
    (log,) = await deliveries.for_job(tenant, later.id)
    assert (log.status, log.next_attempt_at) == ("disabled", None)
    assert log.id not in await deliveries.due(soon(1), limit=10**6)

    replayed = await deliveries.replay(tenant, later.id, log.id)
    assert (replayed.status, replayed.id) == ("pending", log.id)
    assert replayed.id in await deliveries.due(soon(1), limit=10**6)
    after_replay = await finished_job(store, tenant)
    assert [d.status for d in await deliveries.for_job(tenant, after_replay.id)] == ["pending"]


async def test_deliveries_are_scoped_by_tenant(
    store: JobStore, deliveries: DeliveryStore, tenant: str, tenants: Tenants
) -> None:
    job = await finished_job(store, tenant)
    (log,) = await deliveries.for_job(tenant, job.id)
    other = await tenants.new()
    with pytest.raises(JobNotFound):
        await deliveries.for_job(other, job.id)
    with pytest.raises(JobNotFound):
        await deliveries.replay(other, job.id, log.id)
    with pytest.raises(DeliveryNotFound):
        await deliveries.replay(tenant, job.id, "whd_unknown")
    with pytest.raises(DeliveryNotFound):
        await deliveries.load("whd_unknown")
    with pytest.raises(DeliveryNotFound):
        await deliveries.record_attempt(
            "whd_unknown", n=1, status=200, error=None, excerpt=None, duration_ms=1.0, next_attempt_at=None, ok=True
        )


async def test_secrets_are_made_on_first_use_and_rotation_keeps_two_for_the_overlap(
    deliveries: DeliveryStore, tenant: str, tenants: Tenants
) -> None:
    assert await deliveries.secret(tenant) == ("whsec_1", None)
    assert await deliveries.secret(tenant) == ("whsec_1", None)
    assert await deliveries.active_secrets(tenant) == ("whsec_1",)
    assert await deliveries.secret(tenant, rotate=True) == ("whsec_2", "whsec_1")
    assert await deliveries.active_secrets(tenant) == ("whsec_2", "whsec_1")
    assert await deliveries.secret(tenant) == ("whsec_2", "whsec_1")
    assert await deliveries.secret(tenant, rotate=True, overlap_s=0) == ("whsec_3", None)
    assert await deliveries.active_secrets(tenant) == ("whsec_3",)
    other = await tenants.new()
    assert await deliveries.secret(other, rotate=True) == ("whsec_4", None)
