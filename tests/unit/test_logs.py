"""Log lines: JSON, and never a frame's local variables (they hold Settings, with database passwords)."""

from __future__ import annotations

import json

import pytest
import structlog

from inferq.observability.logs import configure_logging


def test_tracebacks_carry_no_local_variables(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")

    def connect() -> None:
        url = "postgresql://inferq:S3cretPassw0rd@db/inferq"  # noqa: F841 - the local a traceback must not show
        raise ConnectionError("refused")

    try:
        connect()
    except ConnectionError:
        structlog.get_logger("test").exception("db.failed")
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert "S3cretPassw0rd" not in line
    event = json.loads(line)
    assert event["event"] == "db.failed"
    assert event["exception"][0]["exc_type"] == "ConnectionError"
    assert [frame["name"] for frame in event["exception"][0]["frames"]][-1] == "connect"
