"""``inferq_jobs`` on the API's ``/metrics``: jobs by status counted in Postgres (open ones now, finished ones
of the last 24 h) through the partial indexes, never a scan of the table; left out when Postgres is down."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator

import pytest
from apikit import closed_port, running, tuned
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.api.job_counts import COUNTS, JobCounts
from inferq.settings import Settings
from inferq.store.database import create_engine
from inferq.store.tables import JobRow

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)
# (status, finished how long ago; None = still open) → how many such jobs
JOBS = {
    ("queued", None): 3,
    ("running", None): 2,
    ("succeeded", dt.timedelta(hours=1)): 4,
    ("failed", dt.timedelta(minutes=1)): 1,
    ("expired", dt.timedelta(hours=23, minutes=50)): 1,
    ("succeeded", dt.timedelta(days=2)): 5,  # older than the window: not counted
    ("canceled", dt.timedelta(hours=25)): 2,
}
EXPECTED = {"queued": 3, "running": 2, "succeeded": 4, "failed": 1, "canceled": 0, "expired": 1}


@pytest.fixture
async def jobs_engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a database of the test's own, holding exactly ``JOBS``."""
    engine = create_engine(fresh_database)
    rows = [
        {
            "id": f"job_{secrets.token_hex(8)}", "tenant_id": "default", "model": "m", "version": 1,
            "status": status, "completion_window_s": 86_400.0, "deadline_at": NOW + dt.timedelta(days=1),
            "finished_at": None if ago is None else NOW - ago,
        }
        for (status, ago), n in JOBS.items()
        for _ in range(n)
    ]  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(JobRow), rows)
        await conn.execute(text("ANALYZE jobs"))
    yield engine
    await engine.dispose()


async def test_open_jobs_now_and_finished_ones_of_the_last_day(jobs_engine: AsyncEngine) -> None:
    counts = await JobCounts(jobs_engine).read()
    assert counts == {k: v for k, v in EXPECTED.items() if v}


async def test_the_counts_read_the_partial_indexes_not_the_table(jobs_engine: AsyncEngine) -> None:
    sql = str(COUNTS.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    async with jobs_engine.connect() as conn:
        await conn.execute(text("SET enable_seqscan = off"))  # a tiny table would be scanned anyway
        plan = "\n".join(row[0] for row in await conn.execute(text(f"EXPLAIN {sql}")))
    assert "ix_jobs_open" in plan, plan
    assert "ix_jobs_finished_at" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_metrics_render_the_jobs_family(
    settings: Settings, fresh_database: str, jobs_engine: AsyncEngine
) -> None:
    async with running(tuned(settings, services__database_url=fresh_database)) as api:
        answer = await api.client.get("/metrics")
    assert answer.status_code == 200
    (family,) = [f for f in text_string_to_metric_families(answer.text) if f.name == "inferq_jobs"]
    assert {s.labels["status"]: s.value for s in family.samples} == EXPECTED
    assert "last 24 hours" in family.documentation


async def test_metrics_leave_the_jobs_out_when_postgres_is_down(settings: Settings) -> None:
    down = tuned(settings, services__database_url=f"postgresql://nobody@127.0.0.1:{closed_port()}/none")
    async with running(down) as api:
        answer = await asyncio.wait_for(api.client.get("/metrics"), timeout=15)
    assert answer.status_code == 200
    assert "inferq_jobs" not in answer.text
    assert "inferq_api_requests_total" in answer.text
