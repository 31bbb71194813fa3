"""Helpers for the job store tests (no tests here): tenants, jobs, chunk streams, outcomes, table counts."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.jobs import NewChunk, NewJob, RowOutcome, WebhookSpec
from inferq.contracts.predictions import Prediction
from inferq.store.tables import EndpointRow, JobRow, SecretRow, TenantRow

Sessions = async_sessionmaker[AsyncSession]


class Tenants:
    """Tenants of the test's own, so that listings and counts see only its jobs; ``drop`` removes them all."""

    def __init__(self, sessionmaker: Sessions) -> None:
        self._sessionmaker = sessionmaker
        self._made: list[str] = []

    async def new(self) -> str:
        tenant = f"t-{secrets.token_hex(6)}"
        async with self._sessionmaker.begin() as session:
            await session.execute(insert(TenantRow).values(id=tenant, name=tenant))
        self._made.append(tenant)
        return tenant

    async def drop(self) -> None:
        """Delete the tenants with their jobs (chunks, events, deliveries cascade), secrets and endpoints."""
        async with self._sessionmaker.begin() as session:
            for table in (JobRow, SecretRow, EndpointRow):
                await session.execute(delete(table).where(table.tenant_id.in_(self._made)))
            await session.execute(delete(TenantRow).where(TenantRow.id.in_(self._made)))


def new_job(
    tenant: str,
    *,
    key: str | None = None,
    body: bytes = b"body",
    webhook: WebhookSpec | None = None,
    window_s: float = 3600.0,
    model: str = "iris",
) -> NewJob:
    return NewJob(
        tenant=tenant,
        model=model,
        version=1,
        completion_window_s=window_s,
        idempotency_key=key,
        request_sha256=hashlib.sha256(body).hexdigest() if key else None,
        webhook=webhook,
        correlation_id="corr-1",
        metadata={"batch": "nightly"},
    )


def valid_chunk(seq: int, indexes: Sequence[int], *, custom_ids: Sequence[str | None] | None = None) -> NewChunk:
    """A chunk to run; its ``inputs`` are opaque bytes naming the chunk."""
    return NewChunk(
        seq=seq,
        rows=len(indexes),
        indexes=tuple(indexes),
        custom_ids=tuple(custom_ids) if custom_ids is not None else tuple(f"row-{i}" for i in indexes),
        inputs=f"inputs-{seq}".encode(),
    )


def reject_chunk(seq: int, indexes: Sequence[int], *, lines: Sequence[int] | None = None) -> NewChunk:
    """Rows rejected at submission, already failed."""
    return NewChunk(
        seq=seq,
        rows=len(indexes),
        indexes=tuple(indexes),
        custom_ids=tuple(f"row-{i}" for i in indexes),
        lines=None if lines is None else tuple(lines),
        outcomes=tuple(failure(f"bad row {i}", code="invalid_input") for i in indexes),
    )


async def stream(*chunks: NewChunk, consumed: list[int] | None = None) -> AsyncIterator[NewChunk]:
    """The chunks as the API streams them; ``consumed`` records each seq handed out."""
    for chunk in chunks:
        if consumed is not None:
            consumed.append(chunk.seq)
        yield chunk


def success(label: int) -> RowOutcome:
    return RowOutcome(prediction=Prediction(label=label, confidence=0.9))


def failure(message: str = "boom", *, code: str = "inference_failed") -> RowOutcome:
    return RowOutcome(error=ErrorInfo(code=code, message=message))


async def count(sessionmaker: Sessions, table: type[Any], **where: object) -> int:
    """Rows of ``table`` whose columns equal ``where``."""
    stmt = select(func.count()).select_from(table)
    for column, value in where.items():
        stmt = stmt.where(getattr(table, column) == value)
    async with sessionmaker() as session:
        return await session.scalar(stmt) or 0
