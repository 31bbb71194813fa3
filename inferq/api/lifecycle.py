"""Versions and aliases changed over HTTP, without HTTP: status, description, overrides, soft delete, traffic.

Reads go to the registry (Postgres), not the catalog, so an admin reads what it just wrote from any API
process. Every write is announced by the registry (``on_change``) to every API catalog and worker pool;
this process's own catalog is also reloaded before answering, so its next prediction sees the change.
"""

from __future__ import annotations

import contextlib

from msgspec import UNSET, UnsetType

from inferq.api.catalog import ModelCatalog
from inferq.api.directory import ModelDirectory, alias_view, version_view
from inferq.contracts.http import AliasBody, AliasView, ShadowBody, VersionPatch, VersionView
from inferq.contracts.models import ModelVersion, Shadow
from inferq.errors import InvalidInput, ServiceUnavailable
from inferq.store.registry import Registry
from inferq.store.traffic import TOTAL_WEIGHT


class ModelLifecycle:
    """The version and alias routes' one service."""

    def __init__(self, *, registry: Registry, catalog: ModelCatalog, directory: ModelDirectory) -> None:
        self._registry = registry
        self._catalog = catalog
        self._directory = directory

    async def get_version(self, model: str, version: int) -> VersionView:
        return await self._view(await self._registry.get_version(model, version))

    async def update_version(self, model: str, version: int, patch: VersionPatch) -> VersionView:
        overrides = patch.overrides
        if not isinstance(overrides, UnsetType):  # JSON numbers arrive as floats: keep whole ones whole
            overrides = {k: int(v) if v.is_integer() else v for k, v in overrides.items()}
        changed = await self._registry.update_version(
            model, version, status=patch.status, description=patch.description, overrides=overrides
        )
        await self._reload()
        return await self._view(changed)

    async def delete_version(self, model: str, version: int) -> None:
        await self._registry.delete_version(model, version)
        await self._reload()

    async def get_alias(self, model: str, alias: str) -> AliasView:
        return alias_view(await self._registry.get_alias(model, alias))

    async def put_alias(self, model: str, alias: str, body: AliasBody) -> AliasView:
        shadow: Shadow | UnsetType | None = UNSET  # left out: the alias keeps its shadow
        if isinstance(body.shadow, ShadowBody):
            shadow = Shadow(version=body.shadow.version, share=body.shadow.share)
        elif body.shadow is None:
            shadow = None
        written = await self._registry.set_alias(
            model,
            alias,
            weights=_weights(body),
            fallback=None if isinstance(body.fallback, UnsetType) else body.fallback,
            shadow=shadow,
        )
        await self._reload()
        return alias_view(written)

    async def delete_alias(self, model: str, alias: str) -> None:
        await self._registry.delete_alias(model, alias)
        await self._reload()

    async def _view(self, version: ModelVersion) -> VersionView:
        key = (version.model, version.version)
        return version_view(version, ready=key in await self._directory.ready([key]))

    async def _reload(self) -> None:
        # Best effort: the change is committed, and the catalog's own refresh retries.
        with contextlib.suppress(ServiceUnavailable):
            await self._catalog.refresh()


def _weights(body: AliasBody) -> dict[int, int]:
    """``{"version": 3}`` pins (``{3: 100}``); ``{"weights": …}`` splits; exactly one of them."""
    if isinstance(body.version, UnsetType) == isinstance(body.weights, UnsetType):
        raise InvalidInput(
            'give exactly one of "version" (a pin, e.g. {"version": 3}) or "weights" (e.g. {"2": 95, "3": 5})',
            field="weights",
        )
    if not isinstance(body.version, UnsetType):
        return {body.version: TOTAL_WEIGHT}
    assert not isinstance(body.weights, UnsetType)
    return body.weights
