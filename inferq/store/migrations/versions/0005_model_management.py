"""Model management: soft-deleted versions, shadow traffic on aliases, paired prediction-log rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A deleted version is archived and hidden; its artifact and its number are kept (numbers are never reused).
    op.add_column("model_versions", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    # {"version": 3, "share": 10}: mirror 10% of the alias's requests to version 3, results logged only.
    op.add_column("model_aliases", sa.Column("shadow", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    # The weights before the last change: ``inferq models rollback`` restores them.
    op.add_column("model_aliases", sa.Column("previous", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    # Which request a row is (``request_id``), which request it mirrored (``shadow_of``), a digest of its
    # inputs (``input_digest``: canary agreement on equal inputs) and the version it fell back from.
    op.add_column("prediction_log", sa.Column("request_id", sa.Text(), nullable=True))
    op.add_column("prediction_log", sa.Column("shadow_of", sa.Text(), nullable=True))
    op.add_column("prediction_log", sa.Column("input_digest", sa.Text(), nullable=True))
    op.add_column("prediction_log", sa.Column("fallback_from", sa.Integer(), nullable=True))
    op.create_index(
        "ix_prediction_log_shadow_of",
        "prediction_log",
        ["shadow_of"],
        postgresql_where=sa.text("shadow_of IS NOT NULL"),
    )
    op.create_index(
        "ix_prediction_log_model_request_id",
        "prediction_log",
        ["model", "request_id"],
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_prediction_log_model_request_id", table_name="prediction_log")
    op.drop_index("ix_prediction_log_shadow_of", table_name="prediction_log")
    for column in ("fallback_from", "input_digest", "shadow_of", "request_id"):
        op.drop_column("prediction_log", column)
    op.drop_column("model_aliases", "previous")
    op.drop_column("model_aliases", "shadow")
    op.drop_column("model_versions", "deleted_at")
