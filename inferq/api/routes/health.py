"""``GET /health/live``, ``GET /health/ready`` (Redis and Postgres reachable) and ``GET /metrics``."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.response import Response

from inferq.api.health import HealthChecks
from inferq.api.metrics import CONTENT_TYPE, Metrics
from inferq.contracts.http import HealthReport


@get("/health/live", summary="The process is up", tags=["health"])
async def health_live() -> HealthReport:
    return HealthReport(status="ok")


@get("/health/ready", summary="Redis and Postgres answer (503 when either does not)", tags=["health"])
async def health_ready(health: NamedDependency[HealthChecks]) -> Response[HealthReport]:
    report = await health.ready()
    return Response(report, status_code=200 if report.status == "ok" else 503)


@get("/metrics", summary="Prometheus metrics", tags=["health"], include_in_schema=False)
async def metrics_text(metrics: NamedDependency[Metrics]) -> Response[bytes]:
    return Response(metrics.render(), media_type=CONTENT_TYPE)
