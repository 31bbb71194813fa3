"""Log lines: JSON, and never a frame's local variables (they hold Settings, with database passwords)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from inferq.observability.logs import configure_logging


@pytest.fixture
def configured(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """``configure_logging`` for one test; the process's logging as it was afterwards (the stream it binds
    is this test's captured stderr, closed once the test ends)."""
    config, root = structlog.get_config(), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("info")
    try:
        yield
    finally:
        structlog.configure(**config)
        root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("configured")
def test_tracebacks_carry_no_local_variables(capfd: pytest.CaptureFixture[str]) -> None:

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
