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
    """Who owns requests, jobs and keys; the migration seeds ``default``."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
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
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    __table_args__ = (CheckConstraint("jsonb_typeof(weights) = 'object'", name="weights_object"),)
