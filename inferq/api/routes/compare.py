"""``GET /v1/models/{model}/compare``: versions side by side, and how often they agree (the prediction log)."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter

from inferq.api.comparisons import DEFAULT_WINDOW, MAX_VERSIONS, MIN_VERSIONS, ComparisonService
from inferq.api.guards import guard
from inferq.api.routes.openapi import GUARDED, problems
from inferq.contracts.http import ModelComparison

_DOC = (
    f"For {MIN_VERSIONS} to {MAX_VERSIONS} versions over the last `since` (every tenant's logged results): "
    "requests (mirrored ones included, and counted apart), errors and error rate, p50/p95/p99 of the queue, "
    "inference and total milliseconds, and predicted rows per class. For each pair of versions, the agreement "
    "of their predicted classes on the same inputs: `shadow` pairs a request with its mirror (shadow traffic: "
    "always logged), `canary` compares the inputs both versions were sent otherwise (found by their digest, "
    "among the logged results: with INFERQ_PREDICTION_LOG_SAMPLE < 1, among the sample). Classifiers only: "
    "the log keeps no regression values."
)
_RESPONSES = problems(
    *GUARDED, 400, 404, 422,
    texts={
        403: "The API key lacks the 'admin' scope (forbidden)",
        404: "Unknown model or version (model_not_found, version_not_found)",
        422: "versions not 2 to 8 distinct numbers, or since not a duration up to 31 days (invalid_input)",
    },
)  # fmt: skip


def _comparisons(state: State) -> ComparisonService:
    service: ComparisonService = state.services.comparisons
    return service


@get("/v1/models/{model:str}/compare", summary="Versions of a model side by side: traffic, latency, agreement",
     description=_DOC, tags=["models"], responses=_RESPONSES, guards=[guard("admin")],
     dependencies={"comparisons": Provide(_comparisons, sync_to_thread=False)})  # fmt: skip
async def compare_versions(
    model: FromPath[str],
    comparisons: NamedDependency[ComparisonService],
    versions: Annotated[str, QueryParameter(description="version numbers separated by commas, e.g. 2,3")],
    since: Annotated[str, QueryParameter(description="how far back: seconds, or 30m / 24h / 7d")] = DEFAULT_WINDOW,
) -> ModelComparison:
    return await comparisons.compare(model, versions=versions, since=since)


COMPARE_HANDLERS = [compare_versions]
