"""Webhook deliveries in Postgres: signing secrets, due work, attempts, the delivery log, replays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import cast

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.deliveries import EXCERPT_CHARS, DeliveryStatus, DeliveryTask, DeliveryView
from inferq.errors import DeliveryNotFound, JobNotFound
from inferq.store import delivery_records
from inferq.store.sessions import statement, transaction
from inferq.store.tables import AttemptRow, DeliveryRow, EndpointRow, JobEventRow, JobRow, SecretRow


class DeliveryStore:
    """Durable webhook state: what to deliver, when, and what happened (the delivery worker sends).

    ``new_secret`` makes a signing secret (``whsec_…``) when a tenant first needs one or rotates.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, new_secret: Callable[[], str]) -> None:
        self._sessionmaker = sessionmaker
        self._new_secret = new_secret

    async def secret(self, tenant: str, *, rotate: bool = False, overlap_s: float = 86_400.0) -> tuple[str, str | None]:
        """The tenant's ``(current, previous)`` secrets, created on first use.

        ``rotate`` makes a new current secret; the old one keeps signing (``previous``) for ``overlap_s``.
        """
        async with transaction(self._sessionmaker) as session:
            if rotate:
                row = await delivery_records.rotate_secret(
                    session, tenant=tenant, secret=self._new_secret(), overlap_s=overlap_s
                )
            else:
                row = await self._secret_row(session, tenant)
            now = await session.scalar(select(func.now()))
        return row.secret, delivery_records.previous_secret(row, now=now)

    async def active_secrets(self, tenant: str) -> tuple[str, ...]:
        """Every secret a delivery is signed with now: the current one, and the previous during an overlap."""
        current, previous = await self.secret(tenant)
        return (current,) if previous is None else (current, previous)

    async def due(self, now: dt.datetime, *, limit: int = 100) -> list[str]:
        """Pending deliveries whose next attempt is at or before ``now``, soonest first."""
        stmt = (
            select(DeliveryRow.id)
            .where(DeliveryRow.status == "pending", DeliveryRow.next_attempt_at <= now)
            .order_by(DeliveryRow.next_attempt_at)
            .limit(limit)
        )
        async with statement(self._sessionmaker) as session:
            return list(await session.scalars(stmt))

    async def pending_unknown(self, now: dt.datetime, *, grace_s: float, limit: int = 100) -> list[str]:
        """For the reconciler: pending deliveries overdue by more than ``grace_s`` (their task was lost)."""
        return await self.due(now - dt.timedelta(seconds=grace_s), limit=limit)

    async def load(self, delivery_id: str) -> DeliveryTask:
        """What the next attempt of ``delivery_id`` sends, and where (send only while ``status`` is pending)."""
        stmt = (
            select(DeliveryRow, JobEventRow)
            .join(JobEventRow, JobEventRow.id == DeliveryRow.event_id)
            .where(DeliveryRow.id == delivery_id)
        )
        async with statement(self._sessionmaker) as session:
            found = (await session.execute(stmt)).first()
        if found is None:
            raise DeliveryNotFound(f"no delivery {delivery_id!r}", delivery_id=delivery_id)
        return delivery_records.task(*found)

    async def record_attempt(
        self,
        delivery_id: str,
        *,
        n: int,
        status: int | None,
        error: str | None,
        excerpt: str | None,
        duration_ms: float,
        next_attempt_at: dt.datetime | None,
        ok: bool,
        gone: bool = False,
    ) -> DeliveryStatus:
        """Record attempt ``n`` and schedule the next; the delivery's status afterwards.

        ``ok`` → succeeded; ``gone`` (410) → the endpoint is disabled and this and its other pending
        deliveries become ``disabled``; else pending again at ``next_attempt_at``, or failed without one.
        Attempt ``n`` recorded twice (two workers raced) changes nothing the second time.
        """
        final: DeliveryStatus = "succeeded" if ok else "disabled" if gone else "failed"
        new_status: DeliveryStatus = final if ok or gone or next_attempt_at is None else "pending"
        clip = None if excerpt is None else excerpt[:EXCERPT_CHARS]
        async with transaction(self._sessionmaker) as session:
            attempt = pg_insert(AttemptRow).values(
                delivery_id=delivery_id, n=n, status=status, error=error, excerpt=clip, duration_ms=duration_ms
            )
            stmt = (
                update(DeliveryRow)
                .where(DeliveryRow.id == delivery_id, DeliveryRow.status == "pending", DeliveryRow.attempts == n - 1)
                .values(
                    status=new_status,
                    attempts=n,
                    next_attempt_at=next_attempt_at if new_status == "pending" else None,
                    last_status=status,
                    last_error=error,
                    last_excerpt=clip,
                    updated_at=func.now(),
                )
                .returning(DeliveryRow.tenant_id, DeliveryRow.url)
            )
            target = (await session.execute(stmt)).first()
            if target is None:
                return await self._status(session, delivery_id)
            await session.execute(attempt)
            if gone:
                await delivery_records.disable_endpoint(session, tenant=target.tenant_id, url=target.url, status=status)
        return new_status

    async def for_job(self, tenant: str, job_id: str) -> list[DeliveryView]:
        """The job's deliveries with their attempts, oldest first (the delivery log)."""
        async with transaction(self._sessionmaker) as session:
            await _check_job(session, tenant=tenant, job_id=job_id)
            return await delivery_records.views(session, DeliveryRow.job_id == job_id)

    async def replay(self, tenant: str, job_id: str, delivery_id: str) -> DeliveryView:
        """Deliver again now (whatever the status); a 410-disabled endpoint is enabled again."""
        where = and_(DeliveryRow.id == delivery_id, DeliveryRow.job_id == job_id, DeliveryRow.tenant_id == tenant)
        async with transaction(self._sessionmaker) as session:
            stmt = (
                update(DeliveryRow)
                .where(where)
                .values(status="pending", next_attempt_at=func.now(), updated_at=func.now())
                .returning(DeliveryRow.url)
            )
            url = await session.scalar(stmt)
            if url is None:
                await _check_job(session, tenant=tenant, job_id=job_id)
                raise DeliveryNotFound(f"no delivery {delivery_id!r} for job {job_id!r}", delivery_id=delivery_id)
            await session.execute(
                update(EndpointRow)
                .where(EndpointRow.tenant_id == tenant, EndpointRow.url == url)
                .values(disabled_at=None, reason=None)
            )
            (view,) = await delivery_records.views(session, where)
        return view

    async def _secret_row(self, session: AsyncSession, tenant: str) -> SecretRow:
        row = await session.get(SecretRow, tenant)
        if row is None:
            stmt = pg_insert(SecretRow).values(tenant_id=tenant, secret=self._new_secret()).on_conflict_do_nothing()
            await session.execute(stmt)
            row = await session.get(SecretRow, tenant, populate_existing=True)
        assert row is not None  # inserted, or inserted by a concurrent caller who won
        return row

    async def _status(self, session: AsyncSession, delivery_id: str) -> DeliveryStatus:
        status = await session.scalar(select(DeliveryRow.status).where(DeliveryRow.id == delivery_id))
        if status is None:
            raise DeliveryNotFound(f"no delivery {delivery_id!r}", delivery_id=delivery_id)
        return cast(DeliveryStatus, status)  # a CHECK constraint keeps it one of the four


async def _check_job(session: AsyncSession, *, tenant: str, job_id: str) -> None:
    found = await session.scalar(select(JobRow.id).where(JobRow.id == job_id, JobRow.tenant_id == tenant))
    if found is None:
        raise JobNotFound(f"no job {job_id!r}", job_id=job_id)
