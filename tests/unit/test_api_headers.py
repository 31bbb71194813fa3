"""``Prefer: wait=N`` and ``Cancel-After``: parsing, caps, and 400s for values that are not numbers."""

from __future__ import annotations

import pytest

from inferq.api.headers import Hold, parse_cancel_after, parse_prefer
from inferq.errors import MalformedRequest


@pytest.mark.parametrize(
    ("header", "hold"),
    [
        (None, Hold(wait_s=30.0)),
        ("", Hold(wait_s=30.0)),
        ("wait=5", Hold(wait_s=5.0, applied="wait=5")),
        ("wait=0.25", Hold(wait_s=0.25, applied="wait=0.25")),
        ("wait=0", Hold(wait_s=0.0, applied="wait=0")),
        ("wait=600", Hold(wait_s=60.0, applied="wait=60")),
        ('handling=lenient, WAIT = "7"', Hold(wait_s=7.0, applied="wait=7")),
        ("return=minimal", Hold(wait_s=30.0)),
        ("respond-async, wait=10", Hold(wait_s=0.0, applied="respond-async")),
    ],
)
def test_prefer_wait_is_bounded_and_echoed(header: str | None, hold: Hold) -> None:
    assert parse_prefer(header, default_s=30.0, max_s=60.0) == hold


@pytest.mark.parametrize("header", ["wait=soon", "wait=-1", "wait=", "wait=5ms", "wait=1e3"])
def test_a_wait_that_is_not_seconds_is_malformed(header: str) -> None:
    with pytest.raises(MalformedRequest, match="Prefer: wait"):
        parse_prefer(header, default_s=30.0, max_s=60.0)


@pytest.mark.parametrize(
    ("header", "ttl_ms"),
    [(None, 600_000), ("  ", 600_000), ("2", 2000), ("0.3", 300), ("300ms", 300), ("1.5s", 1500), ("0.0001", 1)],
)
def test_cancel_after_is_the_ttl_in_milliseconds(header: str | None, ttl_ms: int) -> None:
    assert parse_cancel_after(header, default_s=600.0, max_s=3600.0) == ttl_ms


@pytest.mark.parametrize("header", ["soon", "-2", "0", "0ms", "3601", "1 hour", "1e3"])
def test_bad_cancel_after_is_malformed(header: str) -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_cancel_after(header, default_s=600.0, max_s=3600.0)
    assert caught.value.details["header"] == "Cancel-After"
