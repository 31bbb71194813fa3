"""The Litestar app factory: routes, problem details, OpenAPI, request logging; services in the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException

from inferq.api import runtime
from inferq.api.access import RequestLog
from inferq.api.directory import ModelDirectory
from inferq.api.docs import openapi_config, static_router
from inferq.api.health import HealthChecks
from inferq.api.jobs import JobService
from inferq.api.metrics import Metrics
from inferq.api.model_uploads import ModelUploads
from inferq.api.problems import from_http, problem_details_plugin
from inferq.api.routes import HANDLERS
from inferq.api.routes.admin import ADMIN_HANDLERS
from inferq.api.routes.compare import COMPARE_HANDLERS
from inferq.api.routes.jobs import JOB_HANDLERS
from inferq.api.routes.lifecycle import LIFECYCLE_ROUTER
from inferq.api.routes.stats import STATS_HANDLERS
from inferq.api.routes.v2 import V2_ROUTER
from inferq.api.routes.versions import VERSION_HANDLERS
from inferq.api.service import PredictionService
from inferq.api.stats import StatsService
from inferq.api.v2 import errors as v2_errors
from inferq.api.v2.inference import V2Inference
from inferq.api.v2.metadata import V2Metadata, server_version
from inferq.settings import Settings
from inferq.store.keys import KeyStore


def create_app(settings: Settings) -> Litestar:
    """A new app for ``settings``; nothing is opened until its lifespan starts."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with runtime.opened(settings, metrics=metrics) as services:
            app.state.services = services
            try:
                yield
            finally:
                app.state.services = None

    return Litestar(
        route_handlers=[
            *HANDLERS,
            *JOB_HANDLERS,
            *ADMIN_HANDLERS,
            *STATS_HANDLERS,
            *COMPARE_HANDLERS,
            *VERSION_HANDLERS,
            LIFECYCLE_ROUTER,
            V2_ROUTER,
            static_router(),
        ],
        dependencies={
            "predictions": Provide(_predictions, sync_to_thread=False),
            "models": Provide(_models, sync_to_thread=False),
            "health": Provide(_health, sync_to_thread=False),
            "metrics": Provide(_metrics, sync_to_thread=False),
            "v2_metadata": Provide(_v2_metadata, sync_to_thread=False),
            "v2_inference": Provide(_v2_inference, sync_to_thread=False),
            "jobs": Provide(_jobs, sync_to_thread=False),
            "keys": Provide(_keys, sync_to_thread=False),
            "stats": Provide(_stats, sync_to_thread=False),
            "uploads": Provide(_uploads, sync_to_thread=False),
        },
        lifespan=[lifespan],
        state=State({"settings": settings, "metrics": metrics, "services": None}),
        middleware=[RequestLog(metrics)],
        plugins=[problem_details_plugin()],
        exception_handlers={NotFoundException: _routing_error, MethodNotAllowedException: _routing_error},
        openapi_config=openapi_config(version=server_version()),
        request_max_body_size=settings.api.max_body_bytes,
        logging_config=None,
    )


def begin_drain(app: Litestar) -> None:
    """Shutting down: answer every held caller with a 202 now and refuse new predictions."""
    services: runtime.Services | None = app.state.get("services")
    if services is not None:
        services.predictions.drain()


def _routing_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """No route (404) or method (405): ``{"error"}`` under ``/v2`` (stock V2 clients read it), else a problem."""
    path = request.scope["path"]
    if path == "/v2" or path.startswith("/v2/"):
        return v2_errors.from_http(request, exc)
    return from_http(exc).to_response(request)


def _services(state: State) -> runtime.Services:
    services: runtime.Services | None = state.get("services")
    if services is None:
        raise RuntimeError("the API's services are not open (outside the app's lifespan)")
    return services


def _predictions(state: State) -> PredictionService:
    return _services(state).predictions


def _models(state: State) -> ModelDirectory:
    return _services(state).models


def _health(state: State) -> HealthChecks:
    return _services(state).health


def _metrics(state: State) -> Metrics:
    metrics: Metrics = state.metrics
    return metrics


def _v2_metadata(state: State) -> V2Metadata:
    return _services(state).v2_metadata


def _v2_inference(state: State) -> V2Inference:
    return _services(state).v2_inference


def _jobs(state: State) -> JobService:
    return _services(state).jobs


def _keys(state: State) -> KeyStore:
    return _services(state).keys


def _stats(state: State) -> StatsService:
    return _services(state).stats


def _uploads(state: State) -> ModelUploads:
    return _services(state).uploads
