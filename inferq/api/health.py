"""Readiness: Redis answers ``INFO`` with a safe configuration and Postgres answers SELECT 1, each
within a short timeout. Redis's eviction policy is checked on every probe, not only at startup: a
``CONFIG SET maxmemory-policy allkeys-lru`` at run time takes the process out of rotation at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from inferq.contracts.http import HealthReport
from inferq.errors import UnsafeService
from inferq.streams.durability import read_facts


class HealthChecks:
    """Checks the backing services this API process needs to take predictions."""

    def __init__(self, *, redis: aioredis.Redis, engine: AsyncEngine, timeout_s: float) -> None:
        self._redis = redis
        self._engine = engine
        self._timeout_s = timeout_s

    async def ready(self) -> HealthReport:
        """``ok`` when both answer in time; otherwise ``unavailable`` with what failed."""
        redis, postgres = await asyncio.gather(self._check(self._check_redis()), self._check(self._select_one()))
        checks = {"redis": redis, "postgres": postgres}
        return HealthReport(status="ok" if all(v == "ok" for v in checks.values()) else "unavailable", checks=checks)

    async def _check(self, probe: Awaitable[None]) -> str:
        try:
            await asyncio.wait_for(probe, timeout=self._timeout_s)
        except TimeoutError:
            return f"no answer within {self._timeout_s:g}s"
        except Exception as exc:  # any failure is "not ready"; the reason is reported, not raised
            return f"{type(exc).__name__}: {exc}"[:400]
        return "ok"

    async def _check_redis(self) -> None:
        try:
            facts = await read_facts(self._redis)
        except NoPermissionError:  # INFO denied: the policy cannot be read, the server can
            facts = None
        except ResponseError as exc:  # INFO renamed away
            if "unknown command" not in str(exc):
                raise
            facts = None
        if facts is None:  # unverifiable (startup said so): ready as long as Redis answers
            await self._redis.ping()
            return
        refusals = facts.refusals()
        if refusals:
            raise UnsafeService("; ".join(refusals))

    async def _select_one(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
