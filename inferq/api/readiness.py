"""Which versions can serve, as far as fallback cares: a small view of Redis refreshed in the background.

Only models with an alias that allows fallback are watched, and only their unarchived versions: every
``refresh_s`` one pipelined round trip reads each one's alive key (a worker consumes the partition,
workers/upkeep.py) and broken key (its model failed to load lately, workers/executor.py). Requests read
the view in memory, never Redis: a version that stopped serving is seen within ``refresh_s`` (plus the
alive key's TTL, for a worker that died without a word). When Redis cannot be read, nothing reads as
failing: requests go where the weights send them, as without fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Literal

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from inferq.api.catalog import ModelCatalog
from inferq.contracts.names import Names
from inferq.errors import ServiceUnavailable
from inferq.streams.connection import UNAVAILABLE

log = structlog.get_logger(__name__)

Reason = Literal["not_ready", "load_failed"]
REFRESH_S = 0.5


@dataclass(frozen=True, slots=True)
class View:
    """One reading: the aliases that fall back, the versions read, and those that cannot serve (and why)."""

    aliases: frozenset[tuple[str, str]] = frozenset()
    watched: frozenset[tuple[str, int]] = frozenset()
    failing: dict[tuple[str, int], Reason] = field(default_factory=dict)


class ReadinessView:
    """``start`` reads once and keeps reading every ``refresh_s``; ``stop`` ends it."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        redis: aioredis.Redis,
        names: Names,
        timeout_s: float,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._catalog = catalog
        self._redis = redis
        self._names = names
        self._timeout_s = timeout_s
        self._refresh_s = refresh_s
        self._view = View()
        self._blind = False  # the last reading failed (logged once, not every tick)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever(), name="routing.readiness")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def falls_back(self, model: str, alias: str) -> bool:
        """Whether the alias allows fallback (as of the last reading)."""
        return (model, alias) in self._view.aliases

    def failing(self, model: str, version: int) -> Reason | None:
        """Why the version cannot serve, or ``None``: it can, or it is not watched."""
        return self._view.failing.get((model, version))

    def serves(self, model: str, version: int) -> bool:
        """Known to serve: watched, and neither without a consumer nor failing to load."""
        key = (model, version)
        return key in self._view.watched and key not in self._view.failing

    async def refresh(self) -> None:
        """Read the watched versions' keys now (a Redis failure leaves a view where nothing fails)."""
        try:
            infos = self._catalog.models()
        except ServiceUnavailable:  # no catalog yet: nothing to watch
            infos = []
        aliases = frozenset((info.name, a.name) for info in infos for a in info.aliases if a.fallback)
        models = {model for model, _ in aliases}
        watched = [(i.name, v.version) for i in infos if i.name in models for v in i.versions if v.status != "archived"]
        if not watched:
            self._view = View(aliases=aliases)
            return
        pipe = self._redis.pipeline(transaction=False)
        for model, version in watched:
            partition = self._names.partition(model, version)
            pipe.exists(self._names.alive(partition))
            pipe.exists(self._names.broken(partition))
        try:
            async with asyncio.timeout(self._timeout_s):
                found = await pipe.execute()
        except (TimeoutError, *UNAVAILABLE, ResponseError) as exc:  # e.g. NOPERM: an ACL without the broken keys
            if not self._blind:
                log.warning("routing.readiness_unknown", error=str(exc) or type(exc).__name__)
            self._blind = True
            self._view = View(aliases=aliases)
            return
        self._blind = False
        failing: dict[tuple[str, int], Reason] = {}
        for i, key in enumerate(watched):
            alive, broken = found[2 * i], found[2 * i + 1]
            if not alive:
                failing[key] = "not_ready"
            elif broken:
                failing[key] = "load_failed"
        self._view = View(aliases=aliases, watched=frozenset(watched), failing=failing)

    async def _refresh_forever(self) -> None:
        # NOTE: ends on the stop event too: redis-py's wait_for can swallow a cancel on Python 3.11.
        while not self._stopping.is_set():
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("routing.readiness_crashed")
