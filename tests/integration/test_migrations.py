"""Migrations: empty database to head, idempotent, safe when concurrent, in step with tables.py."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.store.database import create_engine
from inferq.store.migrate import current, head, upgrade
from inferq.store.tables import Base

pytestmark = pytest.mark.integration

REGISTRY_TABLES = {"tenants", "models", "model_versions", "model_aliases", "artifacts", "artifact_chunks"}
JOB_TABLES = {"jobs", "job_chunks", "job_events", "webhook_deliveries", "webhook_attempts", "webhook_endpoints",
              "webhook_secrets"}  # fmt: skip
AUTH_TABLES = {"api_keys"}
LOG_TABLES = {"prediction_log"}


async def test_upgrade_from_empty_creates_every_table_at_head(migrated_db: str, engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert tables == REGISTRY_TABLES | JOB_TABLES | AUTH_TABLES | LOG_TABLES | {"alembic_version"}
    assert await current(migrated_db) == head() == "0005"


async def test_second_upgrade_changes_nothing(migrated_db: str, engine: AsyncEngine) -> None:
    await upgrade(migrated_db)
    assert await current(migrated_db) == head()
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM tenants WHERE id = 'default'")) == 1  # seeded once
        assert await conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1


async def test_concurrent_upgrades_of_an_empty_database_all_succeed(empty_database_url: str) -> None:
    assert await current(empty_database_url) is None
    await asyncio.gather(*(upgrade(empty_database_url) for _ in range(4)))
    assert await current(empty_database_url) == head()
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT id FROM tenants"))).scalars().all() == ["default"]
    finally:
        await engine.dispose()


async def test_default_tenant_is_seeded(engine: AsyncEngine) -> None:
    # NOTE: the run's database is shared: other tests make tenants with their keys.
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT id, name FROM tenants WHERE id = 'default'"))).all()
    assert [(row.id, row.name) for row in rows] == [("default", "Default tenant")]


def _drift(conn: Connection) -> tuple[list[object], dict[str, set[str]]]:
    """Autogenerate's diff, plus CHECK constraints by name (autogenerate does not compare those)."""
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    diff = list(compare_metadata(context, Base.metadata))
    inspector = inspect(conn)
    checks: dict[str, set[str]] = {}
    for table in Base.metadata.sorted_tables:
        declared = {str(c.name) for c in table.constraints if isinstance(c, CheckConstraint)}
        reflected = {str(c["name"]) for c in inspector.get_check_constraints(table.name)}
        if declared != reflected:
            checks[table.name] = declared ^ reflected
    return diff, checks


async def test_tables_module_and_migrations_agree(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diff, checks = await conn.run_sync(_drift)
    assert diff == []
    assert checks == {}
