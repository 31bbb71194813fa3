"""The API's in-process model catalog: every model, version and alias, refreshed from the registry.

Requests resolve ``name``, ``name@3`` and ``name@alias`` (weighted pick included) in memory, never
with a Postgres round trip. The snapshot is reloaded as soon as a registry change is announced in
Redis (``changes``: streams/catalog_revisions.py, a pub/sub message or a moved revision counter, read
every 0.5 s), and every ``refresh_s`` regardless; a miss reloads it at most once per
``miss_refresh_s`` (so a version registered a moment ago is found), and while Postgres is down the
last snapshot keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from inferq.contracts.models import DEFAULT_ALIAS, Alias, ModelInfo, ModelRef, ModelVersion
from inferq.errors import AliasNotFound, ModelNotFound, NotFound, ServiceUnavailable, VersionNotFound
from inferq.store.registry import Registry
from inferq.store.traffic import pick_version

log = structlog.get_logger(__name__)

# A choice among an alias's weighted versions: (model, alias, weights) → version (api/routing.py: sticky keys).
Pick = Callable[[str, str, dict[int, int]], int]


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of the registry, indexed for lookups."""

    models: dict[str, ModelInfo] = field(default_factory=dict)
    versions: dict[tuple[str, int], ModelVersion] = field(default_factory=dict)
    aliases: dict[tuple[str, str], Alias] = field(default_factory=dict)
    served: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)  # alias → unarchived weights

    @classmethod
    def of(cls, infos: Iterable[ModelInfo]) -> Snapshot:
        snap = cls()
        for info in infos:
            snap.models[info.name] = info
            snap.versions.update(((info.name, v.version), v) for v in info.versions)
            live = {v.version for v in info.versions if v.status != "archived"}
            for alias in info.aliases:
                snap.aliases[(info.name, alias.name)] = alias
                snap.served[(info.name, alias.name)] = {v: w for v, w in alias.weights.items() if v in live}
        return snap

    def resolve(self, ref: ModelRef, *, rng: random.Random, pick: Pick | None = None) -> ModelVersion:
        """The version ``ref`` names (archived ones never); a not-found error saying what is missing."""
        info = self.model(ref.name)
        if ref.version is not None:
            found = self.versions.get((ref.name, ref.version))
            if found is None:
                raise _version_not_found(info, ref.version)
            if found.status == "archived":
                raise VersionNotFound(
                    f"version {ref.version} of model {ref.name!r} is archived",
                    model=ref.name,
                    version=ref.version,
                    status="archived",
                )
            return found
        name = ref.alias or DEFAULT_ALIAS
        served = self.served.get((ref.name, name))
        if served is None:
            known = [a.name for a in info.aliases]
            raise AliasNotFound(
                f"model {ref.name!r} has no alias {name!r}; aliases: {', '.join(known) or 'none'}",
                model=ref.name,
                alias=name,
                aliases=known,
            )
        if not served:
            listed = ", ".join(str(v) for v in sorted(self.aliases[(ref.name, name)].weights))
            raise VersionNotFound(
                f"alias {name!r} of model {ref.name!r} points only at archived versions ({listed})",
                model=ref.name,
                alias=name,
            )
        if len(served) == 1:
            chosen = next(iter(served))
        else:
            chosen = pick(ref.name, name, served) if pick is not None else pick_version(served, rng=rng)
        return self.versions[(ref.name, chosen)]

    def model(self, name: str) -> ModelInfo:
        info = self.models.get(name)
        if info is None:
            raise ModelNotFound(f"model {name!r} not found", model=name)
        return info


def _version_not_found(info: ModelInfo, version: int) -> VersionNotFound:
    known = ", ".join(f"{v.version}" if v.status == "active" else f"{v.version} ({v.status})" for v in info.versions)
    return VersionNotFound(
        f"model {info.name!r} has no version {version}; versions: {known or 'none'}",
        model=info.name,
        version=version,
        versions=[v.version for v in info.versions],
    )


class ChangeFeed(Protocol):
    """Calls ``on_change`` whenever the registry may have changed, until ``stop`` is set."""

    async def run(self, on_change: Callable[[], None], stop: asyncio.Event) -> None: ...


class ModelCatalog:
    """The registry's models held in memory; ``start`` loads, a task refreshes, ``stop`` ends it."""

    def __init__(
        self,
        registry: Registry,
        *,
        refresh_s: float = 2.0,
        miss_refresh_s: float = 1.0,
        timeout_s: float = 5.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        changes: ChangeFeed | None = None,
    ) -> None:
        self._registry = registry
        self._changes = changes
        self._refresh_s = refresh_s
        self._miss_refresh_s = miss_refresh_s
        self._timeout_s = timeout_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._loaded_at = -float("inf")
        self._started = 0  # reloads started, and the number of the one whose snapshot is installed
        self._installed = 0
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._miss: asyncio.Future[None] | None = None
        self._stopping = asyncio.Event()
        self._dirty = asyncio.Event()

    async def start(self) -> None:
        """Load once (a failure is logged: the refresher keeps trying), start refreshing and watching."""
        with contextlib.suppress(ServiceUnavailable):
            await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever(), name="catalog.refresh")
        if self._changes is not None:
            self._watch = asyncio.create_task(self._changes.run(self.invalidate, self._stopping), name="catalog.watch")

    async def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        for task in (self._task, self._watch, self._miss):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def refresh(self) -> None:
        """Reload the snapshot now; ``ServiceUnavailable`` (and the old snapshot kept) when Postgres fails."""
        started = self._clock()
        self._started += 1
        number = self._started
        try:
            infos = await asyncio.wait_for(self._registry.list_models(), timeout=self._timeout_s)
        except TimeoutError as exc:
            log.warning("catalog.refresh_failed", error="timed out")
            raise ServiceUnavailable("the model registry did not answer in time") from exc
        except ServiceUnavailable as exc:
            log.warning("catalog.refresh_failed", error=exc.message)
            raise
        if number < self._installed:
            return  # a reload started later already installed a newer snapshot: never go back in time
        self._snapshot = Snapshot.of(infos)
        self._installed = number
        self._loaded_at = started

    def invalidate(self) -> None:
        """The registry changed: reload in the background now (many calls at once make one reload)."""
        self._dirty.set()

    async def resolve(self, ref: ModelRef, *, pick: Pick | None = None) -> ModelVersion:
        """The version ``ref`` names now: in memory, or after one rate-limited reload on a miss."""
        if self._snapshot is not None:
            try:
                return self._snapshot.resolve(ref, rng=self._rng, pick=pick)
            except NotFound:
                if not await self._reload_for_miss():
                    raise
        else:
            await self._reload_for_miss()
        return self._current().resolve(ref, rng=self._rng, pick=pick)

    async def model(self, name: str) -> ModelInfo:
        """One model with its versions and aliases (reloaded on a miss like ``resolve``)."""
        if self._snapshot is not None:
            try:
                return self._snapshot.model(name)
            except NotFound:
                if not await self._reload_for_miss():
                    raise
        else:
            await self._reload_for_miss()
        return self._current().model(name)

    def models(self) -> list[ModelInfo]:
        """Every model in the current snapshot, by name (``ServiceUnavailable`` before the first load)."""
        return sorted(self._current().models.values(), key=lambda info: info.name)

    def _current(self) -> Snapshot:
        if self._snapshot is None:
            raise ServiceUnavailable("the model registry is unavailable and no model catalog is loaded yet")
        return self._snapshot

    async def _reload_for_miss(self) -> bool:
        """Join (or start) one reload no sooner than ``miss_refresh_s`` after the last; True if it worked."""
        if self._miss is None or self._miss.done():
            self._miss = asyncio.ensure_future(self._delayed_refresh())
        try:
            await asyncio.shield(self._miss)
        except ServiceUnavailable:
            if self._snapshot is None:
                raise
            return False  # the last snapshot stands
        return True

    async def _delayed_refresh(self) -> None:
        delay = self._loaded_at + self._miss_refresh_s - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.refresh()

    async def _refresh_forever(self) -> None:
        # NOTE: ends on the stop event too: the refresh's asyncio.wait_for can swallow a cancel on Python 3.11.
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=self._refresh_s)
            if self._stopping.is_set():
                break
            self._dirty.clear()  # before the reload: a change announced during it makes another one
            try:
                await self.refresh()
            except ServiceUnavailable:
                pass  # logged by refresh; the last snapshot keeps serving
            except Exception:
                log.exception("catalog.refresh_crashed")
