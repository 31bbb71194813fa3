"""Request headers that shape a prediction: ``Prefer: wait=N`` (the hold) and ``Cancel-After`` (the deadline)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from inferq.errors import MalformedRequest
from inferq.settings import Settings

_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


@dataclass(frozen=True, slots=True)
class Hold:
    """How long the call is held for a result, and the ``Preference-Applied`` value ('' = none)."""

    wait_s: float
    applied: str = ""


@dataclass(frozen=True, slots=True)
class CallLimits:
    """How long a call may be held, and how far away its deadline may be (from settings)."""

    wait_default_s: float = 30.0
    wait_max_s: float = 60.0
    deadline_default_s: float = 600.0
    deadline_max_s: float = 86_400.0

    @classmethod
    def of(cls, settings: Settings) -> CallLimits:
        queue = settings.queue
        return cls(
            wait_default_s=queue.wait_default_s,
            wait_max_s=queue.wait_max_s,
            deadline_default_s=queue.deadline_default_s,
            deadline_max_s=settings.api.deadline_max_s,
        )

    def hold(self, prefer: str | None) -> Hold:
        return parse_prefer(prefer, default_s=self.wait_default_s, max_s=self.wait_max_s)

    def ttl_ms(self, cancel_after: str | None) -> int:
        return parse_cancel_after(cancel_after, default_s=self.deadline_default_s, max_s=self.deadline_max_s)


def parse_prefer(value: str | None, *, default_s: float, max_s: float) -> Hold:
    """``Prefer`` (RFC 7240): ``wait=N`` seconds, capped at ``max_s``; ``respond-async`` = do not wait.

    Other preferences are ignored, as the RFC asks; a ``wait`` that is not a number is a 400.
    """
    if not value:
        return Hold(wait_s=default_s)
    hold = Hold(wait_s=default_s)
    for preference in value.split(","):
        name, _, raw = preference.partition(";")[0].partition("=")
        name = name.strip().lower()
        if name == "respond-async":
            return Hold(wait_s=0.0, applied="respond-async")
        if name == "wait":
            seconds = _seconds(raw.strip().strip('"'), header="Prefer: wait", allow_units=False)
            applied = min(seconds, max_s)
            hold = Hold(wait_s=applied, applied=f"wait={_format(applied)}")
    return hold


def parse_cancel_after(value: str | None, *, default_s: float, max_s: float) -> int:
    """``Cancel-After``: seconds (``2``, ``0.3``, ``300ms``) until the work must not start; the TTL in ms."""
    if value is None or not value.strip():
        return max(1, math.ceil(default_s * 1000))
    seconds = _seconds(value, header="Cancel-After", allow_units=True)
    if seconds <= 0 or seconds > max_s:
        raise MalformedRequest(
            f"Cancel-After must be more than 0 and at most {_format(max_s)} seconds, got {value.strip()!r}",
            header="Cancel-After",
        )
    return max(1, math.ceil(seconds * 1000))


def _seconds(text: str, *, header: str, allow_units: bool) -> float:
    match = _SECONDS.match(text)
    if match is None or (match.group(2) and not allow_units):
        raise MalformedRequest(f"{header} must be a number of seconds, got {text!r}", header=header.split(":")[0])
    number = float(match.group(1))
    return number / 1000 if match.group(2) == "ms" else number


def _format(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"
