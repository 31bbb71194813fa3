"""The one mapping from errors to V2 answers: a non-200 status with ``{"error": "…"}`` (never problem+json).

    code                                          status   headers
    invalid_input, malformed_request              400
    *_not_found                                   404
    conflict                                      409
    overloaded, service_unavailable,
    model_load_failed                             503      Retry-After
    deadline_exceeded                             504
    inference_failed, anything else               500

Litestar's own errors inside ``/v2`` (body too large, …) keep their status and get the same body.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request
from litestar.exceptions import HTTPException
from litestar.response import Response
from litestar.types import ExceptionHandlersMap

from inferq.api import problems
from inferq.contracts.v2 import ErrorBody, json_encoder
from inferq.errors import InferqError

log = structlog.get_logger(__name__)


def status_of(exc: InferqError) -> int:
    """v1's mapping (inferq.api.problems), except that V2 answers bad input with 400, not 422."""
    status = problems.status_of(exc)
    return 400 if status == 422 else status


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    body = json_encoder.encode(ErrorBody(error=message))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def from_domain(request: Request[Any, Any, Any], exc: InferqError) -> Response[bytes]:
    status = status_of(exc)
    headers = problems.retry_headers(exc, status)
    if status == 500:
        log.warning("v2.inference_failed", code=exc.code, error=exc.message)
    return error_response(status, exc.message, headers)


def from_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        log.error("v2.server_error", status=status, error=exc.detail)
        return error_response(status, "internal error; the request id is in X-Request-ID")
    return error_response(status, exc.detail, exc.headers)


def from_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("v2.unhandled_error", error_type=type(exc).__name__)
    return error_response(500, "internal error; the request id is in X-Request-ID")


# NOTE: set on the /v2 router, so they win over the app's problem-details handlers there.
HANDLERS: ExceptionHandlersMap = {InferqError: from_domain, HTTPException: from_http, Exception: from_unexpected}
