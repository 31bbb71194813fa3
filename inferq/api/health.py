"""Readiness: Redis answers PING and Postgres answers SELECT 1, each within a short timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.contracts.http import HealthReport


class HealthChecks:
    """Checks the backing services this API process needs to take predictions."""

    def __init__(self, *, redis: aioredis.Redis, engine: AsyncEngine, timeout_s: float) -> None:
        self._redis = redis
        self._engine = engine
        self._timeout_s = timeout_s

    async def ready(self) -> HealthReport:
        """``ok`` when both answer in time; otherwise ``unavailable`` with what failed."""
        redis, postgres = await asyncio.gather(self._check(self._ping_redis()), self._check(self._select_one()))
        checks = {"redis": redis, "postgres": postgres}
        return HealthReport(status="ok" if all(v == "ok" for v in checks.values()) else "unavailable", checks=checks)

    async def _check(self, probe: Awaitable[None]) -> str:
        try:
            await asyncio.wait_for(probe, timeout=self._timeout_s)
        except TimeoutError:
            return f"no answer within {self._timeout_s:g}s"
        except Exception as exc:  # any failure is "not ready"; the reason is reported, not raised
            return f"{type(exc).__name__}: {exc}"[:200]
        return "ok"

    async def _ping_redis(self) -> None:
        await self._redis.ping()

    async def _select_one(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
