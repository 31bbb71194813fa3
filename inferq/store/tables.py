"""The registry's tables: tenants, models, versions, aliases, and the chunked artifact store."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from inferq.contracts.models import VERSION_STATUSES

DEFAULT_TENANT = "default"
# Constraint names are fixed by convention so that migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base: timezone-aware timestamps, JSONB for dicts."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute as is
        dt.datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


def _created_at() -> Mapped[dt.datetime]:
    return mapped_column(server_default=func.now())


class TenantRow(Base):
    """Who owns requests, jobs and keys; the migration seeds ``default``. ``limits``: a
    ``contracts.auth.TenantLimits`` (empty = the server's defaults)."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    limits: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[dt.datetime] = _created_at()


class ModelRow(Base):
    """A model name, platform-wide; ``last_version`` hands out version numbers (never reused)."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    last_version: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[dt.datetime] = _created_at()


class ArtifactRow(Base):
    """One immutable, content-addressed model file; its bytes are in ``artifact_chunks``."""

    __tablename__ = "artifacts"
    sha256: Mapped[str] = mapped_column(Text, primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = _created_at()
    __table_args__ = (
        CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),
        CheckConstraint("size_bytes >= 0", name="size_nonnegative"),
    )


class ChunkRow(Base):
    """Bytes ``seq * chunk_size`` onwards of an artifact."""

    __tablename__ = "artifact_chunks"
    sha256: Mapped[str] = mapped_column(Text, ForeignKey("artifacts.sha256", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class VersionRow(Base):
    """One registered version: its artifact, signature, status and serving overrides.

    The primary key ``(model_id, version)`` is the uniqueness of version numbers per model.
    """

    __tablename__ = "model_versions"
    model_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("models.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="active")
    signature: Mapped[dict[str, Any]]
    sha256: Mapped[str] = mapped_column(Text, ForeignKey("artifacts.sha256"), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(Text)
    overrides: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[dt.datetime] = _created_at()
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # soft delete (0005)
    __table_args__ = (
        CheckConstraint(f"status IN {VERSION_STATUSES!r}", name="status"),
        CheckConstraint("version >= 1", name="version_positive"),
    )


class AliasRow(Base):
    """A named pointer to versions with traffic weights, ``{"2": 95, "3": 5}``."""

    __tablename__ = "model_aliases"
    model_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("models.id"), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    weights: Mapped[dict[str, Any]]
    fallback: Mapped[bool] = mapped_column(server_default="false")
    shadow: Mapped[dict[str, Any] | None]  # {"version": 3, "share": 10} (0005)
    previous: Mapped[dict[str, Any] | None]  # the weights before the last change, for rollback (0005)
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    __table_args__ = (CheckConstraint("jsonb_typeof(weights) = 'object'", name="weights_object"),)


# Jobs, their chunks and outbox events, and webhook deliveries (migration 0002).
# NOTE: appended as one block with its own imports so this section merges cleanly; hoist them when convenient.
from sqlalchemy import Index, UniqueConstraint, text  # noqa: E402
from sqlalchemy.dialects.postgresql import ARRAY  # noqa: E402

from inferq.contracts.deliveries import DELIVERY_STATUSES  # noqa: E402
from inferq.contracts.jobs import CHUNK_STATUSES, EVENT_TYPES, JOB_STATUSES  # noqa: E402

_OPEN_JOB = text("status IN ('queued', 'running')")


class JobRow(Base):
    """A batch job: rows for one model version, counters kept by its chunks, one terminal status."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text, ForeignKey("tenants.id"))
    model: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text, server_default="queued")
    total_rows: Mapped[int] = mapped_column(Integer, server_default="0")
    succeeded_rows: Mapped[int] = mapped_column(Integer, server_default="0")
    failed_rows: Mapped[int] = mapped_column(Integer, server_default="0")
    chunks_total: Mapped[int] = mapped_column(Integer, server_default="0")
    chunks_done: Mapped[int] = mapped_column(Integer, server_default="0")
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    request_sha256: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    completion_window_s: Mapped[float]
    deadline_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = _created_at()
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    error: Mapped[dict[str, Any] | None]
    correlation_id: Mapped[str] = mapped_column(Text, server_default="")
    # NOTE: ``metadata`` is reserved on declarative classes; the column keeps the API's name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default="{}")
    __table_args__ = (
        CheckConstraint(f"status IN {JOB_STATUSES!r}", name="status"),
        CheckConstraint(
            "least(total_rows, succeeded_rows, failed_rows, chunks_done) >= 0 AND chunks_done <= chunks_total",
            name="counts",
        ),
        CheckConstraint("(finished_at IS NULL) = (status IN ('queued', 'running'))", name="finished_when_terminal"),
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_jobs_listing", "tenant_id", text("created_at DESC"), text("id DESC")),
        Index("ix_jobs_open", "status", "deadline_at", postgresql_where=_OPEN_JOB),
        Index("ix_jobs_finished_at", "finished_at", postgresql_where=text("finished_at IS NOT NULL")),
    )


class JobChunkRow(Base):
    """Up to ``chunk_rows`` rows of a job: encoded inputs to run, then their outcomes (msgpack)."""

    __tablename__ = "job_chunks"
    job_id: Mapped[str] = mapped_column(Text, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    row_count: Mapped[int] = mapped_column(Integer)
    indexes: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    custom_ids: Mapped[list[str | None]] = mapped_column(ARRAY(Text))
    lines: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    inputs: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(Text, server_default="queued")
    entry_id: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[dt.datetime | None]
    outputs: Mapped[bytes | None] = mapped_column(LargeBinary)
    succeeded: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    finished_at: Mapped[dt.datetime | None]
    __table_args__ = (
        CheckConstraint(f"status IN {CHUNK_STATUSES!r}", name="status"),
        CheckConstraint("row_count >= 1 AND cardinality(indexes) = row_count", name="rows"),
        CheckConstraint("status <> 'done' OR outputs IS NOT NULL", name="outputs_when_done"),
        Index("ix_job_chunks_queued", "enqueued_at", postgresql_where=text("status = 'queued'")),
    )


class JobEventRow(Base):
    """The outbox: one event per job state change (``UNIQUE (job_id, type)``); ``id`` is the webhook-id."""

    __tablename__ = "job_events"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    job_id: Mapped[str] = mapped_column(Text, ForeignKey("jobs.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = _created_at()
    __table_args__ = (
        CheckConstraint(f"type IN {EVENT_TYPES!r}", name="type"),
        UniqueConstraint("job_id", "type"),
    )


class DeliveryRow(Base):
    """One event's delivery to one URL: its status and retry schedule (``UNIQUE (event_id, url)``)."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, ForeignKey("job_events.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(Text, ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[dt.datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_excerpt: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = _created_at()
    __table_args__ = (
        CheckConstraint(f"status IN {DELIVERY_STATUSES!r}", name="status"),
        CheckConstraint("status <> 'pending' OR next_attempt_at IS NOT NULL", name="pending_scheduled"),
        UniqueConstraint("event_id", "url"),
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )


class AttemptRow(Base):
    """Attempt ``n`` of a delivery: HTTP status or error, a response excerpt, how long it took."""

    __tablename__ = "webhook_attempts"
    delivery_id: Mapped[str] = mapped_column(
        Text, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = _created_at()
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    excerpt: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float]


class EndpointRow(Base):
    """A tenant's webhook URL; a 410 Gone disables it (later deliveries are not attempted)."""

    __tablename__ = "webhook_endpoints"
    tenant_id: Mapped[str] = mapped_column(Text, ForeignKey("tenants.id"), primary_key=True)
    url: Mapped[str] = mapped_column(Text, primary_key=True)
    disabled_at: Mapped[dt.datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)


class SecretRow(Base):
    """A tenant's webhook signing secret; during a rotation the previous one signs too until ``previous_until``."""

    __tablename__ = "webhook_secrets"
    tenant_id: Mapped[str] = mapped_column(Text, ForeignKey("tenants.id"), primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_until: Mapped[dt.datetime | None]
    rotated_at: Mapped[dt.datetime] = _created_at()


class ApiKeyRow(Base):
    """An API key: looked up by ``id``; the secret only as HMAC-SHA256 under the server's pepper."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text, ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(Text, server_default="")
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = _created_at()
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    __table_args__ = (
        CheckConstraint("id ~ '^[0-9a-f]{16}$'", name="id_hex"),
        CheckConstraint("cardinality(scopes) > 0 AND scopes <@ ARRAY['predict', 'jobs', 'admin']", name="scopes"),
        CheckConstraint("octet_length(secret_hash) = 32", name="hash_length"),
    )


# The prediction log: one row per logged result, written by the workers in batches (migration 0004).
# NOTE: appended as one block with its own imports so this section merges cleanly; hoist them when convenient.
from sqlalchemy import REAL  # noqa: E402

from inferq.contracts.messages import TERMINAL_STATES  # noqa: E402


class PredictionLogRow(Base):
    """One settled prediction request: who, which version, how it ended, its timings, what it predicted.

    ``predicted``: the class of a one-row classifier result; ``predicted_counts``: ``{class: rows}`` of a
    larger one. ``created_at`` is the worker's clock when the result was settled. No foreign keys: a
    row per prediction must cost one index entry or two, not a lookup. Retention walks ``id``, which
    is issued in insertion order (a BRIN on ``created_at`` would widen and never narrow as rows are
    deleted and their space reused, until every range matched).
    """

    __tablename__ = "prediction_log"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    created_at: Mapped[dt.datetime] = _created_at()
    tenant: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(Text)
    queue_ms: Mapped[float | None] = mapped_column(REAL)
    inference_ms: Mapped[float | None] = mapped_column(REAL)
    row_count: Mapped[int] = mapped_column(Integer)
    predicted: Mapped[str | None] = mapped_column(Text)
    predicted_counts: Mapped[dict[str, Any] | None]
    request_id: Mapped[str | None] = mapped_column(Text)  # 0005: pairs a shadow's row with its primary's
    shadow_of: Mapped[str | None] = mapped_column(Text)
    input_digest: Mapped[str | None] = mapped_column(Text)
    fallback_from: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (
        CheckConstraint(f"status IN {tuple(sorted(TERMINAL_STATES))!r}", name="status"),
        CheckConstraint("row_count >= 0", name="rows_nonnegative"),
        Index("ix_prediction_log_model_created_at", "model", "created_at"),
        Index("ix_prediction_log_shadow_of", "shadow_of", postgresql_where=text("shadow_of IS NOT NULL")),
        Index(
            "ix_prediction_log_model_request_id", "model", "request_id", postgresql_where=text("request_id IS NOT NULL")
        ),
    )
