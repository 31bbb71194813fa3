"""Durations as people write them (completion windows, key expiry and rotation grace)."""

from __future__ import annotations

import pytest

from inferq.contracts.durations import duration_s
from inferq.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), (" 24h ", 86400), ("1.5d", 129600), (7.5, 7.5)]
)
def test_durations_read_as_seconds(text: str | float, seconds: float) -> None:
    assert duration_s(text, field="grace") == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "nan", "inf", "5w", "1e3", "h", float("nan"), 0.0])
def test_anything_else_is_refused_naming_the_field(text: str | float) -> None:
    with pytest.raises(InvalidInput, match="invalid --grace"):
        duration_s(text, field="--grace")


def test_the_cap_is_named() -> None:
    with pytest.raises(InvalidInput, match="at most 60 s"):
        duration_s("2m", field="completion_window", max_s=60)
