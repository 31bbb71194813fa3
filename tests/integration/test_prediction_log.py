"""The prediction log in Postgres: COPY in, the stats query's counts and percentiles, retention in batches."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.stats import Percentiles
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.prediction_log import LogRecord, PredictionLogStore
from inferq.store.prediction_stats import PredictionStats
from inferq.store.tables import PredictionLogRow
from inferq.workers.log_retention import LogRetention, reconcile_and_prune
from inferq.workers.reconciler import ReconcileReport

pytestmark = pytest.mark.integration

Sessions = async_sessionmaker[AsyncSession]
NOW = dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC)


def at(hour: int, minute: int = 0, day: int = 10) -> float:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=dt.UTC).timestamp()


def expected(values: list[float]) -> Percentiles:
    """percentile_cont's answer, computed apart: linear interpolation over the float32 values Postgres keeps."""
    as_stored = np.array(values, dtype=np.float32).astype(np.float64)
    p50, p95, p99 = (round(float(v), 3) for v in np.percentile(as_stored, [50, 95, 99]))
    return Percentiles(p50=p50, p95=p95, p99=p99)


@pytest.fixture
def model() -> str:
    return f"log-{secrets.token_hex(5)}"


async def test_counts_percentiles_and_classes_per_hour_and_over_the_window(sessionmaker: Sessions, model: str) -> None:
    eleven = [
        LogRecord(at=at(11, m), tenant="t1", model=model, version=1, status="succeeded",
                  queue_ms=float(q), inference_ms=0.25 * q, rows=1, predicted="setosa" if q % 3 else "virginica")
        for m, q in enumerate(range(1, 31))
    ]  # fmt: skip
    twelve = [
        LogRecord(at=at(12, 5), tenant="t1", model=model, version=2, status="succeeded", queue_ms=2.0,
                  inference_ms=1.5, rows=4, predicted_counts={"setosa": 3, "versicolor": 1}),
        LogRecord(at=at(12, 6), tenant="t2", model=model, version=2, status="failed", error_code="inference_failed",
                  queue_ms=9.0, inference_ms=3.0, rows=2),
        LogRecord(at=at(12, 7), tenant="t2", model=model, version=2, status="expired", queue_ms=500.0,
                  inference_ms=0.0, rows=1),
        LogRecord(at=at(12, 59), tenant="t1", model=model, version=2, status="succeeded", queue_ms=0.5,
                  inference_ms=0.5, rows=1, predicted="versicolor"),
    ]  # fmt: skip
    outside = [
        LogRecord(at=at(9, 59), tenant="t1", model=model, version=1, status="succeeded", queue_ms=1.0, rows=1),
        LogRecord(at=at(13, 0), tenant="t1", model=model, version=1, status="succeeded", queue_ms=1.0, rows=1),
        LogRecord(at=at(12, 1), tenant="t1", model=f"{model}-other", version=1, status="failed", rows=1),
    ]  # fmt: skip
    await PredictionLogStore(sessionmaker).insert([*eleven, *outside, *twelve])
    stats = PredictionStats(sessionmaker)

    window = await stats.model_stats(model, hours=3, now=NOW)  # 10:00 to 13:00

    assert (window.since, window.until) == (NOW.replace(hour=10, minute=0), NOW.replace(hour=13, minute=0))
    assert (window.model, window.version, window.tenant) == (model, None, None)
    assert [h.hour for h in window.by_hour] == [NOW.replace(hour=11, minute=0), NOW.replace(hour=12, minute=0)]
    first, second = window.by_hour
    assert (first.requests, first.rows, first.errors, first.error_rate) == (30, 30, {}, 0.0)
    assert first.statuses == {"succeeded": 30}
    assert first.classes == {"setosa": 20, "virginica": 10}
    queue_11 = [float(q) for q in range(1, 31)]
    assert first.latency.queue_ms == expected(queue_11)
    assert first.latency.inference_ms == expected([0.25 * q for q in queue_11])
    assert first.latency.total_ms == expected([1.25 * q for q in queue_11])
    assert (second.requests, second.rows) == (4, 8)
    assert second.statuses == {"succeeded": 2, "failed": 1, "expired": 1}
    assert second.errors == {"inference_failed": 1}
    assert second.error_rate == 0.5
    assert second.classes == {"setosa": 3, "versicolor": 2}  # a four-row result's counts and a one-row result's class
    # only what succeeded is timed: the expired request's 500 ms in the queue is counted, not averaged in
    assert second.latency.queue_ms == expected([2.0, 0.5])
    assert second.latency.inference_ms == expected([1.5, 0.5])
    assert second.latency.total_ms == expected([3.5, 1.0])
    totals = window.totals
    assert totals.hour is None
    assert (totals.requests, totals.rows, totals.error_rate) == (34, 38, 2 / 34)
    assert totals.statuses == {"succeeded": 32, "failed": 1, "expired": 1}
    assert totals.classes == {"setosa": 23, "virginica": 10, "versicolor": 2}
    assert totals.latency.queue_ms == expected([*queue_11, 2.0, 0.5])  # the window's own, not the hours' average

    one_tenant = await stats.model_stats(model, hours=3, now=NOW, tenant="t2")
    assert (one_tenant.tenant, one_tenant.totals.requests, one_tenant.totals.error_rate) == ("t2", 2, 1.0)
    assert one_tenant.totals.statuses == {"failed": 1, "expired": 1}
    assert one_tenant.totals.latency.queue_ms is None  # nothing of t2's succeeded
    assert [h.hour for h in one_tenant.by_hour] == [NOW.replace(hour=12, minute=0)]

    version_1 = await stats.model_stats(model, hours=24, now=NOW, version=1)
    assert (version_1.version, version_1.totals.requests) == (1, 31)  # 24 hours reach back to 09:59


async def test_a_window_without_traffic_is_zeros_not_an_error(sessionmaker: Sessions, model: str) -> None:
    stats = await PredictionStats(sessionmaker).model_stats(model, hours=1, now=NOW)
    assert stats.by_hour == ()
    totals = stats.totals
    assert (totals.requests, totals.rows, totals.statuses, totals.classes, totals.error_rate) == (0, 0, {}, {}, 0.0)
    assert (totals.latency.queue_ms, totals.latency.inference_ms, totals.latency.total_ms) == (None, None, None)


async def test_copy_writes_every_column_and_an_empty_batch_nothing(sessionmaker: Sessions, model: str) -> None:
    store = PredictionLogStore(sessionmaker)
    await store.insert([])
    record = LogRecord(at=at(12, 0), tenant="t1", model=model, version=3, status="dead_lettered",
                       error_code="dead_lettered", rows=7, predicted_counts={"a": 6, "b": 1})  # fmt: skip
    await store.insert([record])
    async with sessionmaker() as session:
        row = (await session.execute(select(PredictionLogRow).where(PredictionLogRow.model == model))).scalar_one()
    assert (row.created_at, row.tenant, row.version) == (NOW.replace(minute=0), "t1", 3)
    assert (row.status, row.error_code) == ("dead_lettered", "dead_lettered")
    assert (row.queue_ms, row.inference_ms, row.row_count, row.predicted, row.predicted_counts) == (
        None, None, 7, None, {"a": 6, "b": 1}
    )  # fmt: skip


async def test_a_record_postgres_refuses_fails_the_whole_batch(sessionmaker: Sessions, model: str) -> None:
    good = LogRecord(at=at(12, 0), tenant="t1", model=model, version=1, status="succeeded")
    bad = LogRecord(at=at(12, 0), tenant="t1", model=model, version=1, status="running")  # not terminal: CHECK
    with pytest.raises(Exception, match="ck_prediction_log_status"):
        await PredictionLogStore(sessionmaker).insert([good, bad])
    async with sessionmaker() as session:
        count = await session.scalar(select(func.count()).where(PredictionLogRow.model == model))
    assert count == 0


@pytest.fixture
async def own_sessions(fresh_database: str) -> AsyncIterator[Sessions]:
    """A database of the test's own: retention deletes every tenant's and model's old rows."""
    engine = create_engine(fresh_database)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def test_retention_deletes_exactly_the_old_rows_in_batches(own_sessions: Sessions) -> None:
    store = PredictionLogStore(own_sessions)
    old = [LogRecord(at=at(12, m, day=1), tenant="t", model="m", version=1, status="succeeded") for m in range(7)]
    new = [LogRecord(at=at(12, m, day=9), tenant="t", model="m", version=1, status="succeeded") for m in range(3)]
    await store.insert(old[:4])
    await store.insert(new[:2])
    await store.insert([*old[4:], new[2]])  # ids are not in created_at order: old rows after new ones
    retention = LogRetention(store, retention_s=5 * 86_400, batch=2, max_batches=2)

    first = await retention.run(now=NOW)  # two batches of the two oldest ids, both old
    second = await retention.run(now=NOW)  # ids 5 and 6 are new: that batch deletes none of them, and stops
    assert (first, second) == (4, 0)
    async with own_sessions() as session:
        left = (await session.execute(select(PredictionLogRow.created_at).order_by(PredictionLogRow.id))).scalars()
        remaining = list(left)
    assert sorted(t.day for t in remaining) == [1, 1, 1, 9, 9, 9]
    # the rows past the first new id go once the new ones ahead of them are old too
    later = await LogRetention(store, retention_s=86_400, batch=100).run(now=NOW)
    assert later == 6


async def test_the_reconcile_job_prunes_the_log_after_its_pass(own_sessions: Sessions) -> None:
    store = PredictionLogStore(own_sessions)
    now = dt.datetime.now(dt.UTC).timestamp()  # the job prunes as of the present
    for age_days in (8, 6):
        await store.insert([LogRecord(at=now - age_days * 86_400, tenant="t", model=f"{age_days}d", version=1,
                                      status="succeeded")])  # fmt: skip

    class Reconciler:
        async def run(self) -> ReconcileReport:
            return ReconcileReport(requeued=1)

    report = await reconcile_and_prune(
        {"reconciler": Reconciler(), "log_retention": LogRetention(store, retention_s=7 * 86_400)}, 1
    )
    assert report == ReconcileReport(requeued=1)
    async with own_sessions() as session:
        models = (await session.execute(select(PredictionLogRow.model))).scalars().all()
    assert models == ["6d"]
