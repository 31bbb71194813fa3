"""``POST /v1/models/{model}/predict`` served straight from ASGI, in front of the Litestar app.

The hot route does what its Litestar handler does (same service call, same bodies, same headers,
same problem details, same log line and metrics) without the framework's per-request machinery:
routing, dependency injection, kwargs extraction and response building cost more CPU than the
whole prediction (docs/architecture.md, "The hot route"). Anything this path does not fully
understand — another route, an unreadable or oversized body — goes to the app unchanged, with the
body it already read replayed, so every error outside the service is still rendered by Litestar.
The Litestar handler stays the documented (OpenAPI) route and serves the same path in tests that
mount the app alone.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
import structlog
from litestar import Litestar

from inferq.api.access import client_id, log_request
from inferq.api.auth import require
from inferq.api.guards import address
from inferq.api.metrics import Metrics
from inferq.api.problems import from_domain, from_unexpected
from inferq.api.routes.predictions import answer_response, model_ref, read_headers
from inferq.api.service import PredictCall, PredictionService
from inferq.contracts.http import PredictBody
from inferq.errors import InferqError

# NOTE: plain ASGI types (Litestar's TypedDicts would reject the raw messages this module builds).
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_PATH = re.compile(r"^/v1/models/([^/]+)/predict$")
_ROUTE = "/v1/models/{model}/predict"  # as Litestar names it in scope["path_template"]
_JSON = (b"content-type", b"application/json")
_PROBLEM = (b"content-type", b"application/problem+json")
_body_decoder = msgspec.json.Decoder(PredictBody)
_encoder = msgspec.json.Encoder()


class FastPredict:
    """An ASGI app: the predict route itself, every other request passed to ``app``."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self._metrics: Metrics = app.state.metrics
        self._max_body = settings_limit if isinstance(settings_limit := app.request_max_body_size, int) else 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        services = self.app.state.get("services") if match is not None else None
        if match is None or services is None:
            await self.app(scope, receive, send)  # type: ignore[arg-type]
            return
        body, complete = await _read_body(receive, limit=self._max_body)
        data = _decode(body) if complete else None
        if data is None:  # unreadable or too large: Litestar renders the 400/413 exactly as on every route
            await self.app(scope, _replay(body, more=not complete, receive=receive), send)  # type: ignore[arg-type]
            return
        await self._predict(scope, send, services, model=match[1], data=data)

    async def _predict(self, scope: Scope, send: Send, services: Any, *, model: str, data: PredictBody) -> None:
        started = time.perf_counter()
        cid = client_id(scope) or os.urandom(16).hex()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(correlation_id=cid)
        service: PredictionService = services.predictions
        try:
            # The route's guard, as Litestar would run it: the quota is spent in the admission script.
            principal = require(await services.auth.authenticate(scope["headers"], address(scope)), "predict")
            structlog.contextvars.bind_contextvars(tenant=principal.tenant, key_id=principal.key_id)
            prefer, cancel_after, key = read_headers(scope["headers"])
            hold = service.limits.hold(prefer)
            call = PredictCall(
                ref=model_ref(model),
                inputs=data.inputs,
                wait_s=hold.wait_s,
                ttl_ms=service.limits.ttl_ms(cancel_after),
                correlation_id=cid,
                principal=principal,
                routing_key=key,
            )
            status, payload, headers = answer_response(await service.predict(call), applied=hold.applied)
            raw = _encoder.encode(payload)
            content_type = _JSON
        except Exception as exc:  # every failure becomes a problem details response
            problem = from_domain(exc) if isinstance(exc, InferqError) else from_unexpected(exc)
            status, headers = problem.status_code, dict(problem.headers or {})
            raw = _encoder.encode(_problem_body(problem))
            content_type = _PROBLEM
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    content_type,
                    (b"content-length", str(len(raw)).encode()),
                    (b"x-request-id", cid.encode()),
                    *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})
        log_request(self._metrics, scope, route=_ROUTE, status=status, seconds=time.perf_counter() - started)


def _decode(body: bytes) -> PredictBody | None:
    try:
        return _body_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def _problem_body(problem: Any) -> dict[str, Any]:
    """What Litestar's ``ProblemDetailsException.to_response`` renders, key for key."""
    body: dict[str, Any] = {"status": problem.status_code, "type": problem.type_, "title": problem.title}
    if problem.detail is not None:
        body["detail"] = problem.detail
    body.update(problem.extra or {})
    return body


async def _read_body(receive: Receive, *, limit: int) -> tuple[bytes, bool]:
    """The request body, or what was read of it when it passed ``limit`` (then ``complete`` is false)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: let the app see it
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if limit and size > limit:
            return b"".join(chunks), False
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks), True


def _replay(body: bytes, *, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the bytes already read, then the rest of the request."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": more}

    return replayed
