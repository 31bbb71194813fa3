"""Conversions between job rows and contracts, and the opaque cursors of job and result pages."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Annotated, Any, cast

import msgspec

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.jobs import EventType, JobEvent, JobRecord, JobStatus, JobView, WebhookSpec
from inferq.errors import InvalidInput
from inferq.store.tables import JobEventRow, JobRow

MAX_PAGE = 1000
_JobCursor = tuple[Annotated[dt.datetime, msgspec.Meta(tz=True)], str]
_ResultCursor = tuple[int, int]


def job_from_row(row: JobRow) -> JobRecord:
    """The contract for one ``jobs`` row."""
    webhook = None
    if row.webhook_url is not None:
        webhook = msgspec.convert({"url": row.webhook_url, "events": row.webhook_events}, WebhookSpec)
    return JobRecord(
        id=row.id,
        tenant=row.tenant_id,
        model=row.model,
        version=row.version,
        status=cast(JobStatus, row.status),  # a CHECK constraint keeps it one of the six
        total_rows=row.total_rows,
        succeeded_rows=row.succeeded_rows,
        failed_rows=row.failed_rows,
        chunks_total=row.chunks_total,
        chunks_done=row.chunks_done,
        created_at=row.created_at,
        deadline_at=row.deadline_at,
        completion_window_s=row.completion_window_s,
        started_at=row.started_at,
        finished_at=row.finished_at,
        idempotency_key=row.idempotency_key,
        request_sha256=row.request_sha256,
        webhook=webhook,
        error=None if row.error is None else msgspec.convert(row.error, ErrorInfo),
        correlation_id=row.correlation_id,
        metadata=msgspec.convert(row.meta, dict[str, str]),
    )


def event_from_row(row: JobEventRow) -> JobEvent:
    """The contract for one ``job_events`` row; ``payload`` holds the job view at the event."""
    return JobEvent(
        id=row.id,
        type=cast(EventType, row.type),
        job_id=row.job_id,
        tenant=row.tenant_id,
        created_at=row.created_at,
        data=msgspec.convert(row.payload, JobView),
    )


def to_json(value: msgspec.Struct) -> dict[str, Any]:
    """A Struct as a JSON-ready dict for a JSONB column."""
    return cast(dict[str, Any], msgspec.to_builtins(value))


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"invalid limit {limit}: 1 to {MAX_PAGE}", field="limit")
    return limit


def job_cursor(created_at: dt.datetime, job_id: str) -> str:
    """The cursor of the page after the job ``(created_at, job_id)`` (newest first)."""
    return _encode([created_at.isoformat(), job_id])


def read_job_cursor(cursor: str) -> _JobCursor:
    created_at, job_id = _decode(cursor, _JobCursor)
    return created_at, job_id


def result_cursor(seq: int, position: int) -> str:
    """The cursor of the result page starting at row ``position`` of chunk ``seq``."""
    return _encode([seq, position])


def read_result_cursor(cursor: str) -> _ResultCursor:
    seq, position = _decode(cursor, _ResultCursor)
    return seq, position


def _encode(value: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


def _decode(cursor: str, kind: Any) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=kind)
    except (binascii.Error, ValueError, msgspec.DecodeError) as error:
        raise InvalidInput("invalid cursor: pass next_cursor from the previous page as is", field="cursor") from error
