"""Runners for model versions, loaded lazily: local sha-checked file, else Postgres, then ONNX Runtime."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.models import ModelVersion
from inferq.engine import ModelCache, Runner
from inferq.errors import ModelLoadFailed
from inferq.settings import EngineSettings
from inferq.store.artifacts import LocalArtifactCache, fetch


class ModelSource:
    """One LRU of sessions per intra-op thread count (a per-version override), shared by partitions."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], local: LocalArtifactCache) -> None:
        self._sessions = sessions
        self._local = local
        self._caches: dict[EngineSettings, ModelCache] = {}

    async def runner(self, version: ModelVersion, *, engine: EngineSettings) -> Runner:
        """The loaded runner (a dict lookup once loaded); loading runs in a thread, off the event loop.

        Raises ``ServiceUnavailable`` when Postgres is unreachable (try again later) and
        ``ModelLoadFailed`` / ``InvalidModel`` when the artifact cannot be loaded.
        """
        cache = self._caches.get(engine)
        if cache is None:
            cache = self._caches[engine] = ModelCache(settings=engine)
        sha = version.sha256
        if sha in cache:
            return cache.get(sha, lambda: self._read_local(sha))
        data = await fetch(self._sessions, self._local, sha)
        return await asyncio.to_thread(cache.get, sha, lambda: data)

    def loaded(self, version: ModelVersion, *, engine: EngineSettings) -> bool:
        cache = self._caches.get(engine)
        return cache is not None and version.sha256 in cache

    def close(self) -> None:
        for cache in self._caches.values():
            cache.clear()

    def _read_local(self, sha: str) -> bytes:
        # Only reached when the runner was evicted between the membership test and ``get``.
        data = self._local.read(sha)
        if data is None:
            raise ModelLoadFailed(
                f"artifact {sha[:12]} left the local cache; it will be fetched again", sha256=sha, transient=True
            )
        return data
