"""The Litestar app factory: routes, problem details, OpenAPI, request logging; services in the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide

from inferq.api import runtime
from inferq.api.access import RequestLog
from inferq.api.directory import ModelDirectory
from inferq.api.docs import openapi_config, static_router
from inferq.api.health import HealthChecks
from inferq.api.metrics import Metrics
from inferq.api.problems import problem_details_plugin
from inferq.api.routes import HANDLERS
from inferq.api.service import PredictionService
from inferq.settings import Settings


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
        route_handlers=[*HANDLERS, static_router()],
        dependencies={
            "predictions": Provide(_predictions, sync_to_thread=False),
            "models": Provide(_models, sync_to_thread=False),
            "health": Provide(_health, sync_to_thread=False),
            "metrics": Provide(_metrics, sync_to_thread=False),
        },
        lifespan=[lifespan],
        state=State({"settings": settings, "metrics": metrics, "services": None}),
        middleware=[RequestLog(metrics)],
        plugins=[problem_details_plugin()],
        openapi_config=openapi_config(version=_version()),
        request_max_body_size=settings.api.max_body_bytes,
        logging_config=None,
    )


def begin_drain(app: Litestar) -> None:
    """Shutting down: answer every held caller with a 202 now and refuse new predictions."""
    services: runtime.Services | None = app.state.get("services")
    if services is not None:
        services.predictions.drain()


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


def _version() -> str:
    try:
        return package_version("inferq")
    except PackageNotFoundError:
        return "0"
