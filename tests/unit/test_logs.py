"""Log lines: JSON, and never a frame's local variables (they hold Settings, with database passwords)."""

from __future__ import annotations

import json

import structlog

from inferq.observability.logs import processors


def test_tracebacks_carry_no_local_variables() -> None:
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=processors())

    def connect() -> None:
        url = "postgresql://inferq:S3cretPassw0rd@db/inferq"  # noqa: F841 - the local a traceback must not show
        raise ConnectionError("refused")

    try:
        connect()
    except ConnectionError:
        line = log.exception("db.failed")
    text = line.decode() if isinstance(line, bytes) else str(line)
    assert "S3cretPassw0rd" not in text
    event = json.loads(text)
    assert event["event"] == "db.failed"
    assert event["exception"][0]["exc_type"] == "ConnectionError"
    assert [frame["name"] for frame in event["exception"][0]["frames"]][-1] == "connect"
