"""Delivery rows as contracts, and the secret and endpoint writes of ``DeliveryStore``."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import cast

import msgspec
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.contracts.deliveries import AttemptView, DeliveryStatus, DeliveryTask, DeliveryView
from inferq.contracts.jobs import EventType
from inferq.store.job_records import event_from_row
from inferq.store.tables import AttemptRow, DeliveryRow, EndpointRow, JobEventRow, SecretRow

_body_encoder = msgspec.json.Encoder()


def task(delivery: DeliveryRow, event: JobEventRow) -> DeliveryTask:
    """What an attempt sends: the event's webhook body, the same bytes on every attempt."""
    return DeliveryTask(
        id=delivery.id,
        event_id=event.id,
        type=cast(EventType, event.type),
        tenant=delivery.tenant_id,
        job_id=delivery.job_id,
        url=delivery.url,
        status=cast(DeliveryStatus, delivery.status),
        attempts=delivery.attempts,
        body=_body_encoder.encode(event_from_row(event).payload()),
    )


async def views(session: AsyncSession, where: ColumnElement[bool]) -> list[DeliveryView]:
    """The deliveries matching ``where``, oldest first, each with its attempts."""
    stmt = (
        select(DeliveryRow, JobEventRow.type)
        .join(JobEventRow, JobEventRow.id == DeliveryRow.event_id)
        .where(where)
        .order_by(DeliveryRow.created_at, DeliveryRow.id)
    )
    found = (await session.execute(stmt)).all()
    ids = [delivery.id for delivery, _ in found]
    attempts = await session.scalars(
        select(AttemptRow).where(AttemptRow.delivery_id.in_(ids)).order_by(AttemptRow.delivery_id, AttemptRow.n)
    )
    history: defaultdict[str, list[AttemptView]] = defaultdict(list)
    for a in attempts:
        history[a.delivery_id].append(
            AttemptView(n=a.n, at=a.at, status=a.status, error=a.error, excerpt=a.excerpt, duration_ms=a.duration_ms)
        )
    return [
        DeliveryView(
            id=d.id,
            event_id=d.event_id,
            type=cast(EventType, event_type),
            url=d.url,
            status=cast(DeliveryStatus, d.status),
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_status=d.last_status,
            last_error=d.last_error,
            created_at=d.created_at,
            updated_at=d.updated_at,
            history=tuple(history[d.id]),
        )
        for d, event_type in found
    ]


async def disable_endpoint(session: AsyncSession, *, tenant: str, url: str, status: int | None) -> None:
    """The endpoint answered 410 Gone: disable it, and its pending deliveries with it."""
    reason = f"HTTP {status} Gone" if status is not None else "gone"
    stmt = pg_insert(EndpointRow).values(tenant_id=tenant, url=url, disabled_at=func.now(), reason=reason)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[EndpointRow.tenant_id, EndpointRow.url],
            set_={"disabled_at": func.now(), "reason": reason},
        )
    )
    await session.execute(
        update(DeliveryRow)
        .where(DeliveryRow.tenant_id == tenant, DeliveryRow.url == url, DeliveryRow.status == "pending")
        .values(status="disabled", next_attempt_at=None, updated_at=func.now())
    )


async def rotate_secret(session: AsyncSession, *, tenant: str, secret: str, overlap_s: float) -> SecretRow:
    """Make ``secret`` current; the old one stays valid for ``overlap_s`` (none on first use)."""
    stmt = pg_insert(SecretRow).values(tenant_id=tenant, secret=secret)
    upsert = stmt.on_conflict_do_update(
        index_elements=[SecretRow.tenant_id],
        set_={
            "previous_secret": SecretRow.secret,
            "previous_until": func.now() + dt.timedelta(seconds=overlap_s),
            "secret": stmt.excluded.secret,
            "rotated_at": func.now(),
        },
    )
    returning = upsert.returning(SecretRow).execution_options(populate_existing=True)
    return (await session.scalars(returning)).one()


def previous_secret(row: SecretRow, *, now: dt.datetime | None) -> str | None:
    """The previous secret while its overlap lasts."""
    if row.previous_secret is None or row.previous_until is None or now is None or row.previous_until <= now:
        return None
    return row.previous_secret
