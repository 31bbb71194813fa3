"""Output meant for machines is JSON on stdout; progress and logs go to stderr."""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from inferq.contracts.errors import ErrorInfo
from inferq.errors import InferqError

_encoder = msgspec.json.Encoder()


def emit(value: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(msgspec.json.format(_encoder.encode(value), indent=2).decode() + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """A line for the human at the terminal (stderr)."""
    print(message, file=sys.stderr, flush=True)


def fail(exc: InferqError) -> int:
    """Report a domain error as JSON on stderr; exit status 2 for caller mistakes, 1 otherwise."""
    info = ErrorInfo.from_exception(exc)
    sys.stderr.write(_encoder.encode({"error": info}).decode() + "\n")
    return 1 if exc.retryable else 2
