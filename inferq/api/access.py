"""One log line and the request metrics per HTTP request, under a correlation id.

The id comes from ``X-Request-ID`` (or is made here), is echoed on the response, bound into the
log context, and travels with the prediction through the stream to the worker and back.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from inferq.api.metrics import Metrics

log = structlog.get_logger("inferq.api")
_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def correlation_id(scope: Scope) -> str:
    """The request's correlation id, as set by :class:`RequestLog`."""
    return str(scope["state"].get("correlation_id", ""))


class RequestLog(ASGIMiddleware):
    """Correlation id in, ``X-Request-ID`` out; one ``http.request`` line and metrics per request."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        cid = client_id(scope) or os.urandom(16).hex()
        scope["state"]["correlation_id"] = cid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(correlation_id=cid)
        status = 500
        echo = (b"x-request-id", cid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        try:
            await next_app(scope, receive, send_with_id)
        finally:
            route = scope.get("path_template") or "unmatched"
            log_request(self._metrics, scope, route=route, status=status, seconds=time.perf_counter() - started)


def log_request(metrics: Metrics, scope: Mapping[str, Any], *, route: str, status: int, seconds: float) -> None:
    """The request's metrics and its one ``http.request`` line."""
    method = str(scope.get("method", ""))
    metrics.count_request(route=route, method=method, status=status, seconds=seconds)
    log.info("http.request", method=method, route=route, path=scope["path"], status=status,
             duration_ms=round(seconds * 1000, 3))  # fmt: skip


def client_id(scope: Mapping[str, Any]) -> str | None:
    """The caller's ``X-Request-ID`` when it is a sane token (else a new id is made)."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value.decode() if _CLIENT_ID.match(value) else None
    return None
