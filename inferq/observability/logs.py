"""structlog as JSON lines on stderr, one per event, with the bound context (correlation id first)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog

_encoder = msgspec.json.Encoder(enc_hook=repr)


def _dumps(event: Any, **_: Any) -> bytes:
    return _encoder.encode(event)


def processors() -> list[Any]:
    """The chain every event goes through: context, level, time, traceback as data, one JSON line."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # NOTE: no local variables in tracebacks: frames hold Settings, and with them database passwords.
        structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
        structlog.processors.JSONRenderer(serializer=_dumps),  # msgspec: a third of json's cost
    ]


def configure_logging(level: str = "info") -> None:
    """structlog JSON lines on stderr (stdout is for machine output), and stdlib logging there too.

    Call once, at process start."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    structlog.configure(
        processors=processors(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(file=sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
