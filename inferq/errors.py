"""One error tree for inferq, without HTTP in it.

    InferqError                      code                 retryable
    ├── NotFound
    │   ├── ModelNotFound            model_not_found
    │   ├── VersionNotFound          version_not_found
    │   ├── AliasNotFound            alias_not_found
    │   ├── JobNotFound              job_not_found
    │   ├── KeyNotFound              key_not_found
    │   └── DeliveryNotFound         delivery_not_found
    ├── Unauthenticated              unauthenticated
    ├── Forbidden                    forbidden
    ├── RateLimited                  rate_limited         yes
    ├── InvalidInput                 invalid_input
    ├── MalformedRequest             malformed_request
    ├── InvalidModel                 invalid_model
    ├── Conflict                     conflict
    │   ├── IdempotencyConflict      idempotency_conflict
    │   └── JobFinished              job_finished
    ├── UnsafeWebhookUrl             unsafe_webhook_url
    ├── PayloadTooLarge              payload_too_large
    ├── ModelLoadFailed              model_load_failed    yes
    ├── InferenceFailed              inference_failed
    ├── Overloaded                   overloaded           yes
    ├── DeadlineExceeded             deadline_exceeded
    ├── ServiceUnavailable           service_unavailable  yes
    └── UnsafeService                unsafe_service

The mapping to HTTP statuses lives in one place in ``inferq.api``; errors cross process and stream
boundaries as ``contracts.ErrorInfo`` data, never as pickled exceptions.
"""

from __future__ import annotations

from typing import Any, ClassVar

_BY_CODE: dict[str, type[InferqError]] = {}


class InferqError(Exception):
    """Base of every domain error: a stable ``code``, a message and structured details."""

    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _BY_CODE.setdefault(cls.code, cls)

    def __init__(self, message: str, /, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class NotFound(InferqError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class Unauthenticated(InferqError):
    """No API key, or one that is malformed, unknown, wrong, revoked or expired (deliberately not said which)."""

    code = "unauthenticated"


class Forbidden(InferqError):
    """A valid key without the scope the operation needs."""

    code = "forbidden"


class RateLimited(InferqError):
    """A key's quota is spent (rate or concurrency); ``retry_after_s`` says when to come back."""

    code = "rate_limited"
    retryable = True


class InvalidInput(InferqError):
    """The caller's input does not fit the model's signature; never retried."""

    code = "invalid_input"


class MalformedRequest(InferqError):
    """A request that cannot be read at all: unparsable body or header, unknown body field."""

    code = "malformed_request"


class InvalidModel(InferqError):
    """A model file that cannot be registered: not ONNX, no batch dimension, unsupported."""

    code = "invalid_model"


class Conflict(InferqError):
    code = "conflict"


class JobNotFound(NotFound):
    code = "job_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"


class IdempotencyConflict(Conflict):
    """An ``Idempotency-Key`` reused with a different request body."""

    code = "idempotency_conflict"


class JobFinished(Conflict):
    """The job is already in a terminal state (e.g. cancel after completion)."""

    code = "job_finished"


class UnsafeWebhookUrl(InferqError):
    """A webhook URL that is malformed or resolves to a loopback/private/link-local/metadata address."""

    code = "unsafe_webhook_url"


class PayloadTooLarge(InferqError):
    """A body, upload or job over its configured size or row limit."""

    code = "payload_too_large"


class ModelLoadFailed(InferqError):
    code = "model_load_failed"
    retryable = True


class InferenceFailed(InferqError):
    code = "inference_failed"


class Overloaded(InferqError):
    code = "overloaded"
    retryable = True


class DeadlineExceeded(InferqError):
    code = "deadline_exceeded"


class ServiceUnavailable(InferqError):
    """A backing service (Redis, Postgres) is unreachable or too slow."""

    code = "service_unavailable"
    retryable = True


class UnsafeService(InferqError):
    """A backing service is configured so that a guarantee cannot hold (a Redis that evicts keys):
    processes refuse to start on it rather than lose accepted work later."""

    code = "unsafe_service"


def error_class(code: str) -> type[InferqError]:
    """The error class for a stable code (``InferqError`` for unknown codes)."""
    return _BY_CODE.get(code, InferqError)
