"""Redis's clock, read locally: deadlines count from stream entry ids, which Redis stamps."""

from __future__ import annotations

import time

import redis.asyncio as aioredis


class RedisClock:
    """``now_ms()`` in Redis's time: the local clock plus an offset measured with ``TIME``.

    Hosts with skewed clocks agree on deadlines this way. ``sync`` measures the offset (at start,
    then about once a minute); until then the local clock is used as is.
    """

    def __init__(self) -> None:
        self.offset_ms = 0.0

    async def sync(self, redis: aioredis.Redis) -> None:
        before = time.time()
        seconds, micros = await redis.time()
        after = time.time()
        # NOTE: the server read its clock somewhere in the round trip; its middle is the best guess.
        self.offset_ms = (seconds * 1000 + micros / 1000) - (before + after) * 500

    def now_ms(self) -> float:
        return time.time() * 1000 + self.offset_ms
