"""The one mapping from errors to HTTP: RFC 9457 problem details carrying the domain ``code``.

    code                                    status   headers
    invalid_input, invalid_model            422
    malformed_request                       400
    unauthenticated                         401      WWW-Authenticate: Bearer
    forbidden                               403
    rate_limited                            429      Retry-After, RateLimit-Limit/-Remaining/-Reset
    *_not_found                             404
    conflict                                409
    overloaded                              503      Retry-After (from the drain rate)
    service_unavailable, model_load_failed  503      Retry-After
    deadline_exceeded                       504
    inference_failed, anything else         500      (no internals in the body)

Litestar's own HTTP errors (unparsable body, unknown route, too large) get a code too.
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin

from inferq.errors import InferqError, NotFound

log = structlog.get_logger(__name__)

_STATUS: dict[str, int] = {
    "invalid_input": 422,
    "invalid_model": 422,
    "malformed_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "conflict": 409,
    "idempotency_conflict": 409,
    "job_finished": 409,
    "unsafe_webhook_url": 422,
    "payload_too_large": 413,
    "overloaded": 503,
    "service_unavailable": 503,
    "model_load_failed": 503,
    "deadline_exceeded": 504,
    "inference_failed": 500,
}
_HTTP_CODES: dict[int, str] = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
_TITLES: dict[int, str] = {
    400: "Malformed request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
    504: "Deadline exceeded",
}


def problem(
    *, status: int, code: str, detail: str, details: Any = None, headers: dict[str, str] | None = None
) -> ProblemDetailsException:
    """A problem details exception: ``type`` names the code, ``title`` the status."""
    extra: dict[str, Any] = {"code": code}
    if details:
        extra["details"] = details
    return ProblemDetailsException(
        status_code=status,
        type_=f"urn:inferq:problem:{code}",
        title=_TITLES.get(status, "Error"),
        detail=detail,
        extra=extra,
        headers=headers,
    )


def status_of(exc: InferqError) -> int:
    if isinstance(exc, NotFound):
        return 404
    return _STATUS.get(exc.code, 500)


def retry_headers(exc: InferqError, status: int) -> dict[str, str] | None:
    """``Retry-After`` for a 503 or 429 (from the error's ``retry_after_s``, at least 1 s); the
    ``RateLimit-*`` fields of a 429; the challenge of a 401."""
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="inferq"'}
    if status not in (429, 503):
        return None
    retry = str(max(1, math.ceil(float(exc.details.get("retry_after_s", 1)))))
    headers = {"Retry-After": retry}
    if status == 429 and "limit" in exc.details:
        headers |= {"RateLimit-Limit": str(exc.details["limit"]), "RateLimit-Remaining": "0", "RateLimit-Reset": retry}
    return headers


def from_domain(exc: InferqError) -> ProblemDetailsException:
    status = status_of(exc)
    headers = retry_headers(exc, status)
    if status == 500:
        log.warning("http.inference_failed", code=exc.code, error=exc.message)
    return problem(status=status, code=exc.code, detail=exc.message, details=exc.details, headers=headers)


def from_http(exc: HTTPException) -> ProblemDetailsException:
    status = exc.status_code
    code = _HTTP_CODES.get(status, f"http_{status}")
    detail = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        messages = [str(item.get("message", "")) for item in exc.extra if isinstance(item, dict)]
        detail = "; ".join(m for m in messages if m) or detail
    if status >= 500:
        log.error("http.server_error", status=status, error=detail)
        detail = "internal error"
    return problem(status=status, code=code, detail=detail, headers=exc.headers)


def from_bad_text(exc: UnicodeDecodeError) -> ProblemDetailsException:
    """msgspec raises ``UnicodeDecodeError`` (not a decode error) for invalid UTF-8 inside a JSON string."""
    return problem(status=400, code="malformed_request", detail="the body is not valid JSON: a string is not UTF-8")


def from_deep_json(exc: RecursionError) -> ProblemDetailsException:
    """msgspec raises ``RecursionError`` for JSON nested deeper than it recurses: the caller's mistake."""
    return problem(status=400, code="malformed_request", detail="the body is not valid JSON: nested too deeply")


def from_unexpected(exc: Exception) -> ProblemDetailsException:
    log.exception("http.unhandled_error", error_type=type(exc).__name__)
    return problem(status=500, code="internal_error", detail="internal error; the request id is in X-Request-ID")


def problem_details_plugin() -> ProblemDetailsPlugin:
    """The plugin that renders every error through this module."""
    mapping: dict[type[Exception], Any] = {
        InferqError: from_domain,
        HTTPException: from_http,
        UnicodeDecodeError: from_bad_text,
        RecursionError: from_deep_json,
        Exception: from_unexpected,
    }
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=mapping))
