"""Batch jobs: the HTTP body and views, stored records, per-row results, and outbox events."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from inferq.contracts.durations import duration_s
from inferq.contracts.errors import ErrorInfo
from inferq.contracts.predictions import Prediction

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled", "expired"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "succeeded", "failed", "canceled", "expired")
OPEN_STATUSES: tuple[JobStatus, ...] = ("queued", "running")
ChunkStatus = Literal["queued", "done", "skipped"]
CHUNK_STATUSES: tuple[ChunkStatus, ...] = ("queued", "done", "skipped")
EventType = Literal["job.started", "job.succeeded", "job.failed", "job.canceled", "job.expired"]
EVENT_TYPES: tuple[EventType, ...] = ("job.started", "job.succeeded", "job.failed", "job.canceled", "job.expired")
TERMINAL_EVENTS: frozenset[str] = frozenset(EVENT_TYPES[1:])
# A webhook's event filter: event names, or "completed" for any terminal event.
EventFilter = Literal["completed", "job.started", "job.succeeded", "job.failed", "job.canceled", "job.expired"]
ResultFilter = Literal["all", "succeeded", "failed"]


def new_job_id() -> str:
    """A server-made job id, ``job_`` + 32 hex digits."""
    return f"job_{secrets.token_hex(16)}"


def event_wanted(filters: Sequence[str], event_type: str) -> bool:
    """Whether a webhook with event filter ``filters`` receives ``event_type``."""
    return event_type in filters or ("completed" in filters and event_type in TERMINAL_EVENTS)


def completion_window_s(value: str | float | None, *, default_s: float, max_s: float) -> float:
    """Seconds from ``3600``, ``"90s"``, ``"30m"``, ``"24h"`` or ``"7d"``; ``None`` → the default."""
    return default_s if value is None else duration_s(value, field="completion_window", max_s=max_s)


class WebhookSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a job's events go and which ones: ``completed`` (any terminal event) by default."""

    url: Annotated[str, msgspec.Meta(max_length=2048)]
    # NOTE: a list, not a tuple: Litestar documents a length-bounded tuple's items as `oneOf [X, {}]`, which
    # no valid value satisfies (schema fuzzing found it).
    events: Annotated[list[EventFilter], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["completed"]
    )


CustomId = Annotated[str, msgspec.Meta(max_length=256)]
# A few labels for the caller's bookkeeping: repeated in every view, listing, event and webhook body.
Metadata = Annotated[
    dict[Annotated[str, msgspec.Meta(min_length=1, max_length=64)], Annotated[str, msgspec.Meta(max_length=512)]],
    msgspec.Meta(max_length=16),
]


class JobCreateBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/jobs`` with rows inline: one model, its inputs, and optional per-row ``custom_ids``."""

    model: Annotated[str, msgspec.Meta(max_length=256)]
    inputs: list[Any]
    custom_ids: list[CustomId | None] | None = None
    webhook: WebhookSpec | None = None
    completion_window: str | float | None = None
    metadata: Metadata | None = None


class JobCounts(msgspec.Struct, frozen=True, kw_only=True):
    total: int
    succeeded: int
    failed: int


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    """A job as callers see it; ``progress`` is the share of rows with a result (0..1)."""

    id: str
    object: Literal["job"] = "job"
    model: str
    version: int
    status: JobStatus
    counts: JobCounts
    progress: float
    created_at: dt.datetime
    deadline_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    webhook: WebhookSpec | None = None
    error: ErrorInfo | None = None
    metadata: dict[str, str] = {}


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    data: tuple[JobView, ...]
    next_cursor: str | None = None


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored job with everything the service needs (tenant, idempotency, chunk counters)."""

    id: str
    tenant: str
    model: str
    version: int
    status: JobStatus
    total_rows: int
    succeeded_rows: int
    failed_rows: int
    chunks_total: int
    chunks_done: int
    created_at: dt.datetime
    deadline_at: dt.datetime
    completion_window_s: float
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    idempotency_key: str | None = None
    request_sha256: str | None = None
    webhook: WebhookSpec | None = None
    error: ErrorInfo | None = None
    correlation_id: str = ""
    metadata: dict[str, str] = {}

    @property
    def terminal(self) -> bool:
        return self.status not in OPEN_STATUSES

    def view(self) -> JobView:
        """The HTTP representation (no tenant, no idempotency data)."""
        done = self.succeeded_rows + self.failed_rows
        return JobView(
            id=self.id,
            model=self.model,
            version=self.version,
            status=self.status,
            counts=JobCounts(total=self.total_rows, succeeded=self.succeeded_rows, failed=self.failed_rows),
            progress=round(done / self.total_rows, 4) if self.total_rows else 1.0,
            created_at=self.created_at,
            deadline_at=self.deadline_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            webhook=self.webhook,
            error=self.error,
            metadata=self.metadata,
        )


class RowOutcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One row's result inside a chunk: a prediction, or the error that failed the row."""

    prediction: Prediction | None = None
    error: ErrorInfo | None = None


class ResultLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``results.jsonl`` / ``errors.jsonl`` and of the paged results.

    ``index`` is the row's 0-based position in the submission; ``line`` its line in an uploaded file.
    """

    custom_id: str | None
    index: int
    line: int | None
    status: Literal["succeeded", "failed"]
    prediction: Prediction | None = None
    error: ErrorInfo | None = None


class ResultPage(msgspec.Struct, frozen=True, kw_only=True):
    data: tuple[ResultLine, ...]
    next_cursor: str | None = None


class WebhookPayload(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook body (Standard Webhooks): ``{"type", "timestamp", "data": <the job>}``."""

    type: EventType
    timestamp: dt.datetime
    data: JobView


class JobEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One outbox event: a job's state change; ``id`` is the stable ``webhook-id``."""

    id: str
    type: EventType
    job_id: str
    tenant: str
    created_at: dt.datetime
    data: JobView

    def payload(self) -> WebhookPayload:
        return WebhookPayload(type=self.type, timestamp=self.created_at, data=self.data)


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An event just written, with the pending webhook delivery written with it (if any)."""

    event: JobEvent
    delivery_id: str | None = None


class NewJob(msgspec.Struct, frozen=True, kw_only=True):
    """What the store needs to create a job; its chunks are streamed separately."""

    id: str = msgspec.field(default_factory=new_job_id)
    tenant: str
    model: str
    version: int
    completion_window_s: float
    idempotency_key: str | None = None
    request_sha256: str | None = None
    webhook: WebhookSpec | None = None
    correlation_id: str = ""
    metadata: dict[str, str] = {}


class NewChunk(msgspec.Struct, frozen=True, kw_only=True):
    """Up to ``chunk_rows`` rows: encoded ``inputs`` to run, or (a reject chunk) their ``outcomes``.

    ``indexes``, ``custom_ids`` and ``lines`` (if any) hold one entry per row.
    """

    seq: int
    rows: int
    indexes: tuple[int, ...]
    custom_ids: tuple[str | None, ...]
    lines: tuple[int, ...] | None = None
    inputs: bytes | None = None
    outcomes: tuple[RowOutcome, ...] | None = None


class QueuedChunk(msgspec.Struct, frozen=True, kw_only=True):
    """A chunk waiting to run, with what its stream message needs."""

    job_id: str
    seq: int
    tenant: str
    model: str
    version: int
    rows: int
    inputs: bytes
    deadline_at: dt.datetime
    correlation_id: str = ""
    entry_id: str | None = None
    enqueued_at: dt.datetime | None = None


outcomes_encoder = msgspec.msgpack.Encoder()
outcomes_decoder = msgspec.msgpack.Decoder(tuple[RowOutcome, ...])
