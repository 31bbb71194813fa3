"""``inferq tasks``' webhook metrics, and the API's ``inferq_jobs`` family and its cached reader (no sockets:
the reader runs on a stand-in engine; tests/integration/test_job_counts.py runs it on Postgres)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferq.api.job_counts import JobCounts
from inferq.api.metrics import Metrics
from inferq.contracts.jobs import JOB_STATUSES
from inferq.webhooks.sender import AttemptOutcome
from inferq.workers.task_metrics import ATTEMPT_RESULTS, TaskMetrics, attempt_result


@pytest.mark.parametrize(
    ("outcome", "retry_in_s", "expected"),
    [
        (AttemptOutcome(status=204, ok=True), None, "delivered"),
        (AttemptOutcome(status=500, error="HTTP 500"), 5.0, "retrying"),
        (AttemptOutcome(error="timeout"), 0.0, "retrying"),  # a zero delay is still a retry
        (AttemptOutcome(status=503, error="HTTP 503"), None, "gave_up"),
        (AttemptOutcome(status=410, gone=True, error="HTTP 410"), None, "disabled"),
        (AttemptOutcome(error="unsafe address: 10.0.0.1"), None, "gave_up"),
    ],
)
def test_each_attempt_is_one_of_four_outcomes(outcome: AttemptOutcome, retry_in_s: float | None, expected: str) -> None:
    assert attempt_result(outcome, retry_in_s=retry_in_s) == expected


def test_attempts_are_counted_by_outcome_with_their_duration() -> None:
    metrics = TaskMetrics()
    metrics.count_attempt(AttemptOutcome(status=500, error="HTTP 500", duration_ms=120.0), retry_in_s=5.0)
    metrics.count_attempt(AttemptOutcome(status=500, error="HTTP 500", duration_ms=80.0), retry_in_s=30.0)
    metrics.count_attempt(AttemptOutcome(status=200, ok=True, duration_ms=15_000.0), retry_in_s=None)
    samples = {(s.name, s.labels.get("outcome", s.labels.get("le", ""))): s.value for f in
               text_string_to_metric_families(metrics.render().decode()) for s in f.samples}  # fmt: skip
    assert {r: samples[("inferq_webhook_attempts_total", r)] for r in ATTEMPT_RESULTS} == {
        "delivered": 1, "retrying": 2, "gave_up": 0, "disabled": 0,
    }  # fmt: skip
    assert samples[("inferq_webhook_attempt_duration_seconds_count", "")] == 3
    assert samples[("inferq_webhook_attempt_duration_seconds_sum", "")] == pytest.approx(15.2)
    assert samples[("inferq_webhook_attempt_duration_seconds_bucket", "0.1")] == 1
    assert samples[("inferq_webhook_attempt_duration_seconds_bucket", "15.0")] == 3


# --- the API's jobs by status --------------------------------------------------------------------------------


def jobs_family(text: bytes) -> dict[str, float] | None:
    for family in text_string_to_metric_families(text.decode()):
        if family.name == "inferq_jobs":
            assert family.type == "gauge"
            return {s.labels["status"]: s.value for s in family.samples}
    return None


def test_every_status_is_rendered_zeros_included_and_none_is_no_family() -> None:
    metrics = Metrics()
    assert jobs_family(metrics.render(None, {"queued": 3, "succeeded": 12})) == {
        "queued": 3, "running": 0, "succeeded": 12, "failed": 0, "canceled": 0, "expired": 0,
    }  # fmt: skip
    assert set(jobs_family(metrics.render(None, {})) or {}) == set(JOB_STATUSES)
    assert jobs_family(metrics.render(None, None)) is None
    assert b"inferq_api_requests_total" in metrics.render(None, None)  # the rest renders regardless


class Connection:
    def __init__(self, engine: StandIn) -> None:
        self._engine = engine

    async def execute(self, statement: Any) -> Any:
        self._engine.queries += 1
        await self._engine.release.wait()
        if self._engine.fail:
            raise OSError("connection refused")
        rows = list(self._engine.rows)

        class Result:
            def all(self) -> list[tuple[str, int]]:
                return rows

        return Result()


class StandIn:
    """An engine that counts queries, answers ``rows`` once released, or fails like a Postgres that is down."""

    def __init__(self, rows: list[tuple[str, int]], *, fail: bool = False) -> None:
        self.rows = rows
        self.fail = fail
        self.queries = 0
        self.release = asyncio.Event()
        self.release.set()

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        yield Connection(self)


async def test_one_reading_is_shared_and_kept_for_its_max_age() -> None:
    engine = StandIn([("queued", 2), ("running", 1), ("succeeded", 5)])
    engine.release.clear()
    counts = JobCounts(engine, max_age_s=60.0)  # type: ignore[arg-type]
    callers = [asyncio.ensure_future(counts.read()) for _ in range(5)]
    await asyncio.sleep(0.01)
    engine.release.set()
    assert await asyncio.gather(*callers) == [{"queued": 2, "running": 1, "succeeded": 5}] * 5
    assert await counts.read() == {"queued": 2, "running": 1, "succeeded": 5}
    assert engine.queries == 1
    fresh = JobCounts(engine, max_age_s=0.0)  # type: ignore[arg-type]
    await fresh.read()
    await fresh.read()
    assert engine.queries == 3


async def test_postgres_down_is_none_and_is_not_asked_again_at_once() -> None:
    engine = StandIn([], fail=True)
    counts = JobCounts(engine, max_age_s=60.0)  # type: ignore[arg-type]
    assert await counts.read() is None
    assert await counts.read() is None
    assert engine.queries == 1


async def test_a_hung_postgres_is_none_after_the_timeout() -> None:
    engine = StandIn([("queued", 1)])
    engine.release.clear()  # never answers
    counts = JobCounts(engine, timeout_s=0.05)  # type: ignore[arg-type]
    assert await counts.read() is None


async def test_metrics_without_a_reader_read_no_jobs() -> None:
    metrics = Metrics()
    assert await metrics.read_jobs() is None
    metrics.jobs = JobCounts(StandIn([("expired", 4)]))  # type: ignore[arg-type]
    assert await metrics.read_jobs() == {"expired": 4}
