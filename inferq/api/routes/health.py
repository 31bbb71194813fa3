"""``GET /health/live``, ``GET /health/ready`` (Redis and Postgres reachable, Redis safe to use),
``GET /health/backlog`` (what KEDA scales workers on) and ``GET /metrics``."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response

from inferq.api.directory import ModelDirectory
from inferq.api.health import HealthChecks
from inferq.api.metrics import CONTENT_TYPE, Metrics
from inferq.api.routes.openapi import PUBLIC, problems
from inferq.contracts.http import HealthReport
from inferq.errors import InferqError
from inferq.streams.backlog import Backlog

_NOT_READY = {503: ResponseSpec(data_container=HealthReport, description="Not ready: `checks` says which check failed")}


@get("/health/live", summary="The process is up", tags=["health"], security=PUBLIC)
async def health_live() -> HealthReport:
    return HealthReport(status="ok")


@get("/health/ready", summary="Redis and Postgres answer (503 when either does not)", tags=["health"], security=PUBLIC,
     responses=_NOT_READY)  # fmt: skip
async def health_ready(health: NamedDependency[HealthChecks]) -> Response[HealthReport]:
    report = await health.ready()
    return Response(report, status_code=200 if report.status == "ok" else 503)


@get(
    "/health/backlog",
    summary="Work waiting in every partition: undelivered + pending entries (503 when Redis cannot be read)",
    description="`total` is the sum of `backlog` and `pending` over every partition: the value KEDA's "
    "metrics-api scaler reads (`valueLocation: total`) to scale the `worker --all` pool. Cached for 1 s.",
    tags=["health"],
    security=PUBLIC,
    responses=problems(503, texts={503: "Redis cannot be read in time, or refuses to report (service_unavailable)"}),
)
async def health_backlog(models: NamedDependency[ModelDirectory]) -> Backlog:
    return await models.backlog()


@get("/metrics", summary="Prometheus metrics", tags=["health"], include_in_schema=False)
async def metrics_text(metrics: NamedDependency[Metrics], models: NamedDependency[ModelDirectory]) -> Response[bytes]:
    try:
        backlog: Backlog | None = await models.backlog()
    except InferqError:  # Redis down or the catalog not loaded yet: the process's own metrics still render
        backlog = None
    jobs = await metrics.read_jobs()  # None when Postgres is down: the family is left out, nothing else
    return Response(metrics.render(backlog, jobs), media_type=CONTENT_TYPE)
