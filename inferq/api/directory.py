"""Models as the API lists them: the catalog's versions and aliases, plus readiness from Redis.

Soft-deleted versions are not in the catalog, so never listed here.

A version is ready while its partition's alive key exists (a worker consumes it). Readiness is read
in one pipelined round trip; when Redis cannot be read, every version reads as not ready. The backlog
of every version (``GET /health/backlog``, the stream gauges) is read the same way, at most once a
second per process however often it is asked for.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from inferq.api.catalog import ModelCatalog
from inferq.contracts.http import AliasView, ModelList, ModelView, VersionView
from inferq.contracts.models import DEFAULT_ALIAS, Alias, ModelInfo, ModelRef, ModelVersion
from inferq.contracts.names import Names
from inferq.errors import InvalidInput, ModelNotFound, ServiceUnavailable
from inferq.streams.backlog import Backlog, read_backlog
from inferq.streams.connection import UNAVAILABLE
from inferq.streams.partition import Partition

log = structlog.get_logger(__name__)

BACKLOG_MAX_AGE_S = 1.0


class ModelDirectory:
    """``GET /v1/models`` and ``GET /v1/models/{model}``, without HTTP."""

    def __init__(self, *, catalog: ModelCatalog, redis: aioredis.Redis, names: Names, timeout_s: float) -> None:
        self._catalog = catalog
        self._redis = redis
        self._names = names
        self._timeout_s = timeout_s
        self._backlog: tuple[float, Backlog] | None = None
        self._reading: asyncio.Future[Backlog] | None = None

    async def list_models(self) -> ModelList:
        infos = self._catalog.models()
        ready = await self.ready([(info.name, v.version) for info in infos for v in info.versions])
        return ModelList(models=tuple(_view(info, ready) for info in infos))

    async def get_model(self, model: str) -> ModelView:
        try:
            name = ModelRef.parse(model).name
        except InvalidInput:
            raise ModelNotFound(f"model {model!r} not found", model=model) from None
        info = await self._catalog.model(name)
        ready = await self.ready([(info.name, v.version) for v in info.versions])
        return _view(info, ready)

    async def ready(self, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
        """The ``(model, version)`` pairs among ``keys`` a worker consumes now (none when Redis cannot say)."""
        if not keys:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for model, version in keys:
            pipe.exists(self._names.alive(self._names.partition(model, version)))
        try:
            found = await asyncio.wait_for(pipe.execute(), timeout=self._timeout_s)
        except (TimeoutError, *UNAVAILABLE) as exc:
            log.warning("models.readiness_unknown", error=str(exc) or type(exc).__name__)
            return set()
        return {key for key, exists in zip(keys, found, strict=True) if exists}

    async def backlog(self) -> Backlog:
        """Every servable version's backlog (``ServiceUnavailable`` when Redis cannot be read in time).

        Archived versions are left out: no worker consumes them, so their leftovers are no reason to
        scale. Callers arriving while a reading is under way share it (one Redis round trip)."""
        now = time.monotonic()
        if self._backlog is not None and now - self._backlog[0] < BACKLOG_MAX_AGE_S:
            return self._backlog[1]
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read_backlog(now))
        return await asyncio.shield(self._reading)

    async def _read_backlog(self, now: float) -> Backlog:
        parts = [
            Partition.of(self._names, model=info.name, version=v.version)
            for info in self._catalog.models()
            for v in info.versions
            if v.status != "archived"
        ]
        try:
            backlog = await asyncio.wait_for(read_backlog(self._redis, parts), timeout=self._timeout_s)
        except (TimeoutError, *UNAVAILABLE) as exc:
            raise ServiceUnavailable(f"redis is unavailable: {str(exc) or type(exc).__name__}") from exc
        except ResponseError as exc:  # e.g. NOPERM: an ACL without what the backlog reads (docs/redis.md)
            raise ServiceUnavailable(f"redis refused to report the backlog: {exc}") from exc
        self._backlog = (now, backlog)
        return backlog


def _view(info: ModelInfo, ready: set[tuple[str, int]]) -> ModelView:
    default = next((a for a in info.aliases if a.name == DEFAULT_ALIAS), None)
    targets = set(default.weights) if default else set()
    return ModelView(
        name=info.name,
        ready=any((info.name, v) in ready for v in targets),
        created_at=info.created_at,
        description=info.description,
        versions=tuple(version_view(v, ready=(info.name, v.version) in ready) for v in info.versions),
        aliases=tuple(alias_view(a) for a in info.aliases),
    )


def version_view(version: ModelVersion, *, ready: bool) -> VersionView:
    """A version as the API shows it (``GET /v1/models/{model}``, the version routes, uploads)."""
    return VersionView(
        version=version.version,
        status=version.status,
        ready=ready,
        signature=version.signature,
        sha256=version.sha256,
        size_bytes=version.size_bytes,
        created_at=version.created_at,
        description=version.description,
        overrides=version.overrides,
    )


def alias_view(alias: Alias) -> AliasView:
    """An alias as the API shows it."""
    return AliasView(
        name=alias.name, weights=alias.weights, fallback=alias.fallback, shadow=alias.shadow, previous=alias.previous
    )
