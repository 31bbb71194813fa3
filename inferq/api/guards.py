"""Route guards: authenticate the caller, check the scope the route needs, count its rate quota.

``guard("jobs")`` on a route (or router) authenticates ``Authorization: Bearer iq_…``, requires one of
the named scopes, spends one request of the key's rate quota in Redis, and leaves the
:class:`Principal` in the request's state, where handlers get it as the ``principal`` dependency.
Prediction routes pass ``counted=False``: their quota is spent inside the admission script, with the
XADD, in the same round trip. With Redis unreachable, other routes go unmetered rather than refused
(jobs are accepted into Postgres during a Redis outage). Routes without a guard (health, metrics,
docs) are public.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from inferq.api.auth import require
from inferq.contracts.auth import Principal, Scope
from inferq.errors import ServiceUnavailable

log = structlog.get_logger(__name__)

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def guard(*scopes: Scope, counted: bool = True) -> Guard:
    """A guard requiring any one of ``scopes`` (every route takes a key; ``admin`` is never implied)."""

    async def check(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        services = connection.app.state.get("services")
        if services is None:
            raise ServiceUnavailable("the API is starting or stopping", retry_after_s=1)
        principal: Principal = await services.auth.authenticate(connection.scope["headers"], address(connection.scope))
        require(principal, *scopes)
        structlog.contextvars.bind_contextvars(tenant=principal.tenant, key_id=principal.key_id)
        if counted:
            try:
                await services.quotas.hit(principal)
            except ServiceUnavailable as exc:
                # NOTE: open, not closed: what these routes serve lives in Postgres (a job is accepted while
                # Redis is down and runs once it is back); predictions need Redis and fail there anyway.
                log.warning("quota.unchecked", key_id=principal.key_id, error=exc.message)
        connection.scope["state"]["principal"] = principal

    return check


def principal_of(scope: Mapping[str, Any]) -> Principal:
    """The caller a guard authenticated for this request (the ``principal`` dependency)."""
    principal: Principal = scope["state"]["principal"]
    return principal


def address(scope: Mapping[str, Any]) -> str:
    """The client's address as the server saw it (behind a proxy: the proxy's)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
