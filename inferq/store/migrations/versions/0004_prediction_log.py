"""The prediction log: one row per logged result, for per-model stats.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# NOTE: spelled out, not imported from the package: a migration must create what it created when written.
_STATES = ("canceled", "dead_lettered", "expired", "failed", "succeeded")


def upgrade() -> None:
    op.create_table(
        "prediction_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("queue_ms", sa.REAL(), nullable=True),
        sa.Column("inference_ms", sa.REAL(), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("predicted", sa.Text(), nullable=True),
        sa.Column("predicted_counts", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint(f"status IN {_STATES!r}", name=op.f("ck_prediction_log_status")),
        sa.CheckConstraint("row_count >= 0", name=op.f("ck_prediction_log_rows_nonnegative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_log")),
    )
    op.create_index("ix_prediction_log_model_created_at", "prediction_log", ["model", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_prediction_log_model_created_at", table_name="prediction_log")
    op.drop_table("prediction_log")
