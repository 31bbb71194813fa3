"""Batch jobs: jobs, their chunks, the outbox of job events, webhook deliveries, endpoints and secrets.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JOB_STATUSES = "('queued', 'running', 'succeeded', 'failed', 'canceled', 'expired')"
_EVENT_TYPES = "('job.started', 'job.succeeded', 'job.failed', 'job.canceled', 'job.expired')"


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def _at(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def _count(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def _text(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def upgrade() -> None:
    """Create the job and webhook tables."""
    _create_jobs()
    _create_chunks()
    _create_events()
    _create_deliveries()
    op.create_table(
        "webhook_endpoints",
        _text("tenant_id"),
        _text("url"),
        _at("disabled_at"),
        _text("reason", nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_webhook_endpoints_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "url", name=op.f("pk_webhook_endpoints")),
    )
    op.create_table(
        "webhook_secrets",
        _text("tenant_id"),
        _text("secret"),
        _text("previous_secret", nullable=True),
        _at("previous_until"),
        _now("rotated_at"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_webhook_secrets_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_webhook_secrets")),
    )


def _create_jobs() -> None:
    op.create_table(
        "jobs",
        _text("id"),
        _text("tenant_id"),
        _text("model"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default="queued", nullable=False),
        *(_count(name) for name in ("total_rows", "succeeded_rows", "failed_rows", "chunks_total", "chunks_done")),
        _text("idempotency_key", nullable=True),
        _text("request_sha256", nullable=True),
        _text("webhook_url", nullable=True),
        sa.Column("webhook_events", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("completion_window_s", sa.Float(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        _now("created_at"),
        _at("started_at"),
        _at("finished_at"),
        sa.Column("error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("correlation_id", sa.Text(), server_default="", nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.CheckConstraint(f"status IN {_JOB_STATUSES}", name=op.f("ck_jobs_status")),
        sa.CheckConstraint(
            "least(total_rows, succeeded_rows, failed_rows, chunks_done) >= 0 AND chunks_done <= chunks_total",
            name=op.f("ck_jobs_counts"),
        ),
        sa.CheckConstraint(
            "(finished_at IS NULL) = (status IN ('queued', 'running'))", name=op.f("ck_jobs_finished_when_terminal")
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_jobs_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name=op.f("uq_jobs_tenant_id_idempotency_key")),
    )
    op.create_index("ix_jobs_listing", "jobs", ["tenant_id", sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index(
        "ix_jobs_open", "jobs", ["status", "deadline_at"], postgresql_where=sa.text("status IN ('queued', 'running')")
    )
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"], postgresql_where=sa.text("finished_at IS NOT NULL"))


def _create_chunks() -> None:
    op.create_table(
        "job_chunks",
        _text("job_id"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("indexes", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("custom_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("lines", postgresql.ARRAY(sa.Integer()), nullable=True),
        sa.Column("inputs", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.Text(), server_default="queued", nullable=False),
        _text("entry_id", nullable=True),
        _at("enqueued_at"),
        sa.Column("outputs", sa.LargeBinary(), nullable=True),
        _count("succeeded"),
        _count("failed"),
        _at("finished_at"),
        sa.CheckConstraint("status IN ('queued', 'done', 'skipped')", name=op.f("ck_job_chunks_status")),
        sa.CheckConstraint("row_count >= 1 AND cardinality(indexes) = row_count", name=op.f("ck_job_chunks_rows")),
        sa.CheckConstraint("status <> 'done' OR outputs IS NOT NULL", name=op.f("ck_job_chunks_outputs_when_done")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_chunks_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_job_chunks")),
    )
    op.create_index(
        "ix_job_chunks_queued", "job_chunks", ["enqueued_at"], postgresql_where=sa.text("status = 'queued'")
    )


def _create_events() -> None:
    op.create_table(
        "job_events",
        _text("id"),
        _text("job_id"),
        _text("tenant_id"),
        _text("type"),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _now("created_at"),
        sa.CheckConstraint(f"type IN {_EVENT_TYPES}", name=op.f("ck_job_events_type")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
        sa.UniqueConstraint("job_id", "type", name=op.f("uq_job_events_job_id_type")),
    )


def _create_deliveries() -> None:
    op.create_table(
        "webhook_deliveries",
        _text("id"),
        _text("event_id"),
        _text("job_id"),
        _text("tenant_id"),
        _text("url"),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        _count("attempts"),
        _at("next_attempt_at"),
        sa.Column("last_status", sa.Integer(), nullable=True),
        _text("last_error", nullable=True),
        _text("last_excerpt", nullable=True),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'disabled')", name=op.f("ck_webhook_deliveries_status")
        ),
        sa.CheckConstraint(
            "status <> 'pending' OR next_attempt_at IS NOT NULL",
            name=op.f("ck_webhook_deliveries_pending_scheduled"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["job_events.id"],
            name=op.f("fk_webhook_deliveries_event_id_job_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_webhook_deliveries_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("event_id", "url", name=op.f("uq_webhook_deliveries_event_id_url")),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(op.f("ix_webhook_deliveries_job_id"), "webhook_deliveries", ["job_id"])
    op.create_table(
        "webhook_attempts",
        _text("delivery_id"),
        sa.Column("n", sa.Integer(), nullable=False),
        _now("at"),
        sa.Column("status", sa.Integer(), nullable=True),
        _text("error", nullable=True),
        _text("excerpt", nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", "n", name=op.f("pk_webhook_attempts")),
    )


def downgrade() -> None:
    """Drop the job and webhook tables (indexes go with them)."""
    for table in (
        "webhook_secrets",
        "webhook_endpoints",
        "webhook_attempts",
        "webhook_deliveries",
        "job_events",
        "job_chunks",
        "jobs",
    ):
        op.drop_table(table)
