"""The prediction log's writes: many rows in one COPY, and retention in bounded batches."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

import msgspec
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.store.sessions import statement
from inferq.store.tables import PredictionLogRow

_COLUMNS = (
    "created_at", "tenant", "model", "version", "status", "error_code", "queue_ms", "inference_ms", "row_count",
    "predicted", "predicted_counts", "request_id", "shadow_of", "input_digest", "fallback_from",
)  # fmt: skip
_json = msgspec.json.Encoder()


class LogRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One logged result, as a worker buffers it (cheap to make: the conversions wait for the flush)."""

    at: float  # the worker's clock (epoch seconds) when the result was settled
    tenant: str
    model: str
    version: int
    status: str
    error_code: str | None = None
    queue_ms: float | None = None
    inference_ms: float | None = None
    rows: int = 1
    predicted: str | None = None  # a one-row classifier result's class
    predicted_counts: dict[str, int] | None = None  # a larger one's {class: rows}
    request_id: str | None = None
    shadow_of: str | None = None  # a shadow's row: the primary request it mirrored (its ``request_id``)
    input_digest: str | None = None  # ``contracts.digests.input_digest`` of the request: "the same inputs"
    fallback_from: int | None = None  # served by this version because that one could not


class PredictionLogStore:
    """Appends to ``prediction_log`` and prunes it."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def insert(self, records: Sequence[LogRecord]) -> None:
        """Every record in one ``COPY … FROM STDIN`` (binary): all of them, or none on an error.

        NOTE: asyncpg's COPY on the pooled connection, beneath SQLAlchemy: ~4× the rows per second of
        an executemany INSERT for a fraction of the client's CPU, which is the worker's.
        """
        if not records:
            return
        rows = [_row(r) for r in records]
        async with statement(self._sessionmaker) as session:
            connection = await (await session.connection()).get_raw_connection()
            driver: Any = connection.driver_connection
            await driver.copy_records_to_table(PredictionLogRow.__tablename__, records=rows, columns=_COLUMNS)

    async def delete_before(self, when: dt.datetime, *, limit: int = 10_000) -> int:
        """Retention: delete those of the ``limit`` oldest rows (by ``id``) created before ``when``; how many.

        Fewer than ``limit`` means the old rows are gone (or the oldest ids reach past ``when``): stop.
        Walking the primary key reads ``limit`` index entries however large the table, and finds the
        old rows wherever their pages are.
        """
        oldest = select(PredictionLogRow.id).order_by(PredictionLogRow.id).limit(limit).scalar_subquery()
        stmt = (
            delete(PredictionLogRow)
            .where(PredictionLogRow.id.in_(oldest), PredictionLogRow.created_at < when)
            .execution_options(synchronize_session=False)
        )
        async with statement(self._sessionmaker) as session:
            result = await session.execute(stmt)
        return cast(CursorResult[Any], result).rowcount


def _row(record: LogRecord) -> tuple[Any, ...]:
    counts = record.predicted_counts
    return (
        dt.datetime.fromtimestamp(record.at, dt.UTC),
        record.tenant,
        record.model,
        record.version,
        record.status,
        record.error_code,
        record.queue_ms,
        record.inference_ms,
        record.rows,
        record.predicted,
        None if counts is None else _json.encode(counts).decode(),
        record.request_id,
        record.shadow_of,
        record.input_digest,
        record.fallback_from,
    )
