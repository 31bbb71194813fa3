"""``GET /v1/models/{model}/stats``: a model's logged traffic per hour (the prediction log)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from inferq.api.guards import guard, principal_of
from inferq.api.routes.openapi import GUARDED, problems
from inferq.api.stats import MAX_HOURS, StatsService
from inferq.contracts.stats import ModelStats

_DOC = (
    "Per hour (UTC) and over the window: results by status and error code, error rate, p50/p95/p99 of the "
    "queue, inference and total (queue + inference) milliseconds, and predicted rows per class. A key sees "
    "its tenant's traffic; an `admin` key every tenant's, or one with `tenant`. `wine@2` narrows to a version. "
    "Hours without traffic are left out; with INFERQ_PREDICTION_LOG_SAMPLE < 1, counts are of the sample."
)
_RESPONSES = problems(
    *GUARDED, 400, 404, 422,
    texts={
        403: "The API key lacks a scope, or names another tenant without 'admin' (forbidden)",
        404: "Unknown model or version (model_not_found, version_not_found)",
        422: "An alias instead of a model or version (invalid_input)",
    },
)  # fmt: skip


@get("/v1/models/{model:str}/stats", summary="A model's traffic per hour: counts, errors, latency, classes",
     description=_DOC, tags=["models"], responses=_RESPONSES, guards=[guard("predict", "jobs", "admin")])  # fmt: skip
async def model_stats(
    request: Request[Any, Any, Any],
    model: FromPath[str],
    stats: NamedDependency[StatsService],
    # NOTE: QueryParameter, not msgspec.Meta: Litestar neither enforces nor documents Meta on a query value.
    hours: Annotated[int, QueryParameter(ge=1, le=MAX_HOURS, description="hours back, the current one included")] = 24,
    tenant: Annotated[str | None, QueryParameter(description="an admin key: this tenant only")] = None,
) -> ModelStats:
    return await stats.model_stats(principal_of(request.scope), model, hours=hours, tenant=tenant)


STATS_HANDLERS = [model_stats]
