"""The outbox: a job's state-change event and its webhook delivery, written in the caller's transaction."""

from __future__ import annotations

import secrets

from sqlalchemy import and_, case, exists, func, null
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.contracts.jobs import EventRecord, EventType, event_wanted
from inferq.store.job_records import event_from_row, job_from_row, to_json
from inferq.store.tables import DeliveryRow, EndpointRow, JobEventRow, JobRow


def new_event_id() -> str:
    """An event id, ``msg_`` + 32 hex digits: the stable ``webhook-id`` of its deliveries."""
    return f"msg_{secrets.token_hex(16)}"


def new_delivery_id() -> str:
    return f"whd_{secrets.token_hex(16)}"


async def emit(session: AsyncSession, job: JobRow, event_type: EventType) -> EventRecord | None:
    """Write the event for ``job`` (as it is now) and, when its webhook wants it, the delivery.

    ``None`` when the job already has an event of this type: ``UNIQUE (job_id, type)`` makes
    "one event per state change" structural, whoever calls. A delivery to an endpoint disabled by
    a 410 is written as ``disabled`` and never attempted.
    """
    record = job_from_row(job)
    stmt = (
        pg_insert(JobEventRow)
        .values(
            id=new_event_id(),
            job_id=job.id,
            tenant_id=job.tenant_id,
            type=event_type,
            payload=to_json(record.view()),
        )
        .on_conflict_do_nothing(index_elements=[JobEventRow.job_id, JobEventRow.type])
        .returning(JobEventRow)
    )
    row = await session.scalar(stmt)
    if row is None:
        return None
    event = event_from_row(row)
    webhook = record.webhook
    if webhook is None or not event_wanted(webhook.events, event_type):
        return EventRecord(event=event)
    disabled = exists().where(
        and_(
            EndpointRow.tenant_id == job.tenant_id,
            EndpointRow.url == webhook.url,
            EndpointRow.disabled_at.is_not(None),
        )
    )
    delivery = (
        pg_insert(DeliveryRow)
        .values(
            id=new_delivery_id(),
            event_id=event.id,
            job_id=job.id,
            tenant_id=job.tenant_id,
            url=webhook.url,
            status=case((disabled, "disabled"), else_="pending"),
            next_attempt_at=case((disabled, null()), else_=func.now()),
        )
        .returning(DeliveryRow.id, DeliveryRow.status)
    )
    delivery_id, status = (await session.execute(delivery)).one()
    return EventRecord(event=event, delivery_id=delivery_id if status == "pending" else None)
