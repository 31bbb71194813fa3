"""When to try a webhook again: a Svix-like schedule with jitter, a server's ``Retry-After``, and the last attempt.

Attempt 1 runs at once; after a failure the next waits 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (8
attempts over about 27.6 h), each ±10 %. Every wait, a server's ``Retry-After`` included, is multiplied by
``JobsSettings.webhook_retry_scale``, so tests run the whole schedule in milliseconds.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import time

STEPS_S: tuple[float, ...] = (5.0, 300.0, 1_800.0, 7_200.0, 18_000.0, 36_000.0, 36_000.0)  # before attempts 2..8
JITTER = 0.1
RETRY_AFTER_MAX_S = 86_400.0  # a server cannot push an attempt further out than a day


def next_delay(
    attempt: int,
    *,
    scale: float,
    max_attempts: int,
    retry_after: float | None = None,
    jitter: float = JITTER,
) -> float | None:
    """Seconds to wait after failed attempt ``attempt`` (1-based) before the next, or None if it was the last.

    The step's delay is jittered by ±``jitter``; a server's ``retry_after`` can raise it (up to a day) but
    never lower it. Attempts past the schedule's end wait as long as its last step.
    """
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    if attempt >= max_attempts:
        return None
    step = STEPS_S[min(attempt, len(STEPS_S)) - 1]
    delay = step * random.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S))
    return delay * scale


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from now (delay-seconds or an HTTP date), capped at a day.

    None when absent or unreadable; a date in the past is 0.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return min(float(text), RETRY_AFTER_MAX_S)  # float() of a huge number is inf, never an error
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": the date is in UTC
        when = when.replace(tzinfo=datetime.UTC)
    seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)
