"""Errors as data, for crossing process and stream boundaries."""

from __future__ import annotations

from typing import Any

import msgspec

from inferq.errors import InferqError, error_class


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A domain error as data: the stable code, a message, and optional details."""

    code: str
    message: str
    details: dict[str, Any] = {}

    @classmethod
    def from_exception(cls, exc: InferqError) -> ErrorInfo:
        return cls(code=exc.code, message=exc.message, details=dict(exc.details))

    def to_exception(self) -> InferqError:
        return error_class(self.code)(self.message, **self.details)
