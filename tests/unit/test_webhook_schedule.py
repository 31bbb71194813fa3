"""The webhook retry schedule: exact steps, jitter bounds, the time scale, Retry-After, exhaustion."""

from __future__ import annotations

import email.utils
import random

import pytest

from inferq.settings import JobsSettings
from inferq.webhooks.schedule import RETRY_AFTER_MAX_S, next_delay, parse_retry_after

SVIX_WAITS_S = [5.0, 300.0, 1_800.0, 7_200.0, 18_000.0, 36_000.0, 36_000.0]
NOW = 1_700_000_000.0


def test_without_jitter_the_waits_are_the_svix_steps_and_the_eighth_attempt_is_the_last() -> None:
    waits = [next_delay(attempt, scale=1.0, max_attempts=8, jitter=0.0) for attempt in range(1, 9)]
    assert waits == [*SVIX_WAITS_S, None]
    assert sum(SVIX_WAITS_S) == 99_305.0  # about 27.6 hours from the first attempt to the last


def test_the_default_settings_give_eight_attempts_at_full_scale() -> None:
    jobs = JobsSettings()
    waits = [next_delay(n, scale=jobs.webhook_retry_scale, max_attempts=jobs.webhook_max_attempts, jitter=0.0)
             for n in range(1, 9)]  # fmt: skip
    assert waits == [*SVIX_WAITS_S, None]


@pytest.mark.parametrize("scale", [0.001, 0.5, 0.0])
def test_the_scale_multiplies_every_wait(scale: float) -> None:
    waits = [next_delay(attempt, scale=scale, max_attempts=8, jitter=0.0) for attempt in range(1, 8)]
    assert waits == [step * scale for step in SVIX_WAITS_S]


def test_jitter_stays_within_ten_percent_and_varies() -> None:
    random.seed(7)
    waits = [next_delay(3, scale=1.0, max_attempts=8) for _ in range(500)]
    assert all(w is not None and 1_620.0 <= w <= 1_980.0 for w in waits)
    numbers = [w for w in waits if w is not None]
    assert min(numbers) < 1_700.0
    assert max(numbers) > 1_900.0


def test_attempts_past_the_schedule_wait_as_long_as_its_last_step() -> None:
    waits = [next_delay(attempt, scale=1.0, max_attempts=10, jitter=0.0) for attempt in range(7, 11)]
    assert waits == [36_000.0, 36_000.0, 36_000.0, None]


def test_a_single_attempt_allows_no_retry() -> None:
    assert next_delay(1, scale=1.0, max_attempts=1) is None


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempts count from 1"):
        next_delay(attempt, scale=1.0, max_attempts=8)


@pytest.mark.parametrize(
    ("attempt", "retry_after", "scale", "expected"),
    [
        (1, 60.0, 1.0, 60.0),  # longer than the 5 s step: the server wins
        (2, 10.0, 1.0, 300.0),  # shorter than the 5 min step: never lowers it
        (1, 0.0, 1.0, 5.0),
        (1, -30.0, 1.0, 5.0),
        (1, 10.0**7, 1.0, RETRY_AFTER_MAX_S),  # capped at a day
        (1, 60.0, 0.01, 0.6),  # scaled like every other wait
    ],
)
def test_retry_after_raises_the_wait_up_to_a_day(
    attempt: int, retry_after: float, scale: float, expected: float
) -> None:
    assert next_delay(attempt, scale=scale, max_attempts=8, retry_after=retry_after, jitter=0.0) == pytest.approx(
        expected
    )


def test_retry_after_does_not_extend_an_exhausted_schedule() -> None:
    assert next_delay(8, scale=1.0, max_attempts=8, retry_after=60.0) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("9" * 400, RETRY_AFTER_MAX_S),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW + 90), 90.0),
        (email.utils.formatdate(NOW - 3600, usegmt=True), 0.0),
        (email.utils.formatdate(NOW + 7 * 86_400, usegmt=True), RETRY_AFTER_MAX_S),
        ("Tue, 14 Nov 2023 22:13:50 -0000", 30.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("²", None),
        ("Tue, 99 Nov 2023 22:14:20 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected
