"""The 0002 migration (up from 0001, down and up again) and the constraints that make job states structural."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from test_store_jobs_kit import Sessions, Tenants, new_job, stream, valid_chunk

from inferq.store.database import create_engine
from inferq.store.jobs import JobStore
from inferq.store.migrate import alembic_config, current, head, upgrade

pytestmark = pytest.mark.integration

JOB_TABLES = {
    "jobs",
    "job_chunks",
    "job_events",
    "webhook_deliveries",
    "webhook_attempts",
    "webhook_endpoints",
    "webhook_secrets",
}


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _downgrade(url: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


async def test_0002_upgrades_from_0001_and_downgrades_cleanly(empty_database_url: str) -> None:
    await upgrade(empty_database_url, revision="0001")
    assert not (await _tables(empty_database_url)) & JOB_TABLES
    await upgrade(empty_database_url)
    assert await current(empty_database_url) == head()
    assert await _tables(empty_database_url) >= JOB_TABLES
    await _downgrade(empty_database_url, "0001")
    assert await current(empty_database_url) == "0001"
    assert not (await _tables(empty_database_url)) & JOB_TABLES
    await upgrade(empty_database_url)
    assert await _tables(empty_database_url) >= JOB_TABLES


async def test_constraints_keep_states_and_events_consistent(
    sessionmaker: Sessions, engine: AsyncEngine, tenants: Tenants
) -> None:
    tenant = await tenants.new()
    job, _ = await JobStore(sessionmaker).create(new_job(tenant), stream(valid_chunk(0, [0, 1])))
    rejected = [
        ("UPDATE jobs SET status = 'dead_lettered', finished_at = now() WHERE id = :id", "ck_jobs_status"),
        ("UPDATE jobs SET status = 'succeeded' WHERE id = :id", "ck_jobs_finished_when_terminal"),
        ("UPDATE jobs SET chunks_done = 2 WHERE id = :id", "ck_jobs_counts"),
        ("UPDATE job_chunks SET status = 'done' WHERE job_id = :id", "ck_job_chunks_outputs_when_done"),
        ("UPDATE job_chunks SET indexes = '{0}' WHERE job_id = :id", "ck_job_chunks_rows"),
        (
            "INSERT INTO job_events (id, job_id, tenant_id, type, payload) VALUES"
            " ('msg_a', :id, 't', 'job.started', '{}'), ('msg_b', :id, 't', 'job.started', '{}')",
            "uq_job_events_job_id_type",
        ),
        (
            "INSERT INTO job_events (id, job_id, tenant_id, type, payload)"
            " VALUES ('msg_c', :id, 't', 'job.done', '{}')",
            "ck_job_events_type",
        ),
    ]
    for statement, constraint in rejected:
        async with engine.connect() as conn:
            with pytest.raises(IntegrityError, match=constraint):
                await conn.execute(text(statement), {"id": job.id})
