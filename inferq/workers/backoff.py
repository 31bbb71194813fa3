"""Exponential backoff with jitter, and waits that end early on stop: every worker loop sleeps through these."""

from __future__ import annotations

import asyncio
import contextlib
import random


class Backoff:
    """Delays ``initial_s``, ×2 each time, capped at ``max_s``, ±20 % jitter; ``reset`` after a success."""

    def __init__(self, *, initial_s: float = 0.05, max_s: float = 2.0) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next = initial_s

    def next(self) -> float:
        """The delay to wait now; the following one is twice as long (up to the cap)."""
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self.initial_s


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    return stop.is_set()
