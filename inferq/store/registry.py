"""The model registry: register versions, resolve references, manage aliases, statuses and soft deletes.

Every write is one transaction under the model row's lock (``lookups.lock_model``), and is announced
after it commits through ``on_change`` (the API and the CLI pass ``CatalogNotifier.changed``, which tells
every API catalog and worker pool to reload; the registry itself knows nothing of Redis).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
import structlog
from msgspec import UNSET, UnsetType
from sqlalchemy import delete, func, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.models import (
    DEFAULT_ALIAS,
    VERSION_STATUSES,
    Alias,
    ModelInfo,
    ModelRef,
    ModelSignature,
    ModelVersion,
    Shadow,
    VersionStatus,
    check_alias_name,
    check_model_name,
)
from inferq.errors import Conflict, InvalidInput, VersionNotFound
from inferq.store import lookups, upserts
from inferq.store.aliases import write_alias
from inferq.store.artifacts import ArtifactStore
from inferq.store.database import translate_errors
from inferq.store.records import (
    alias_from_row,
    check_overrides,
    signature_to_json,
    version_from_row,
    weights_from_json,
)
from inferq.store.tables import AliasRow, VersionRow
from inferq.store.traffic import pick_version

log = structlog.get_logger(__name__)

# Called with the model's name after a change to it committed; must not raise (failures are logged).
OnChange = Callable[[str], Awaitable[None]]


class Registry:
    """Models, versions and aliases in Postgres; every method returns contracts, never rows."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        artifacts: ArtifactStore | None = None,
        rng: random.Random | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._artifacts = artifacts or ArtifactStore()
        self._rng = rng or random.Random()
        self._on_change = on_change

    async def register(
        self,
        *,
        name: str,
        model: bytes,
        signature: ModelSignature,
        description: str | None = None,
        aliases: Sequence[str] = (),
        overrides: Mapping[str, int | float] | None = None,
    ) -> ModelVersion:
        """Store the artifact and add the next version of ``name``, all in one transaction.

        The model is created on first use, and its first version gets the ``default`` alias;
        each of ``aliases`` (``default`` included) is created or moved to pin the new version (an alias
        moved keeps its fallback flag and its shadow, which must take the new version's inputs).
        ``description`` describes the version, and the model too while the model has none.
        """
        check_model_name(name)
        moved = [check_alias_name(alias) for alias in dict.fromkeys(aliases)]
        serving = check_overrides(overrides, signature=signature)
        async with self._transaction() as session:
            sha256 = await self._artifacts.put(session, model)
            model_id, version = await upserts.next_version(session, name=name, description=description)
            stmt = insert(VersionRow).values(
                model_id=model_id,
                version=version,
                signature=signature_to_json(signature),
                sha256=sha256,
                size_bytes=len(model),
                description=description,
                overrides=serving,
            )
            row = (await session.scalars(stmt.returning(VersionRow))).one()
            pinned = ([DEFAULT_ALIAS] if version == 1 else []) + moved
            for alias in dict.fromkeys(pinned):  # NOTE: next_version holds the model row's lock
                await write_alias(session, model=name, model_id=model_id, alias=alias, weights={version: 100})
        await self._changed(name)
        return version_from_row(name, row)

    async def resolve(self, ref: ModelRef, *, rng: random.Random | None = None) -> ModelVersion:
        """The version ``ref`` names: ``name@3``, or a weighted pick among an alias's served versions.

        Archived versions are never resolved (deprecated ones still are).
        """
        async with self._statement() as session:
            if ref.version is not None:
                row = await lookups.find_version(session, ref.name, version=ref.version)
                if row.status == "archived":
                    raise VersionNotFound(
                        f"version {ref.version} of model {ref.name!r} is archived",
                        model=ref.name,
                        version=ref.version,
                        status="archived",
                    )
                return version_from_row(ref.name, row)
            alias = ref.alias or DEFAULT_ALIAS
            found = await lookups.find_candidates(session, ref.name, alias=alias)
        if not found.versions:
            listed = ", ".join(sorted(found.weights, key=int))
            raise VersionNotFound(
                f"alias {alias!r} of model {ref.name!r} points only at archived versions ({listed})",
                model=ref.name,
                alias=alias,
            )
        weights = weights_from_json(found.weights)
        by_version = {row.version: row for row in found.versions}
        chosen = pick_version({v: weights[v] for v in by_version}, rng=rng or self._rng)
        return version_from_row(ref.name, by_version[chosen])

    async def get_version(self, name: str, version: int) -> ModelVersion:
        """``name@version`` in any status (archived included; deleted ones are not found)."""
        async with self._statement() as session:
            return version_from_row(name, await lookups.find_version(session, name, version=version))

    async def list_models(self) -> list[ModelInfo]:
        """Every model with its versions and aliases, by name."""
        async with self._transaction(snapshot=True) as session:
            return await lookups.model_infos(session)

    async def get_model(self, name: str) -> ModelInfo:
        """One model with its versions and aliases."""
        async with self._transaction(snapshot=True) as session:
            infos = await lookups.model_infos(session, name=name)
        if not infos:
            raise lookups.model_not_found(name)
        return infos[0]

    async def get_alias(self, name: str, alias: str) -> Alias:
        """One alias of a model (``AliasNotFound`` listing the model's aliases when unknown)."""
        async with self._statement() as session:
            model_id = await lookups.model_id(session, name)
            row = await session.get(AliasRow, (model_id, alias)) if _alias_name(alias) else None
            if row is None:
                raise await lookups.alias_not_found(session, name, alias=alias, model_id=model_id)
        return alias_from_row(name, row)

    async def set_alias(
        self,
        name: str,
        alias: str,
        *,
        weights: Mapping[int, int],
        fallback: bool | None = None,
        shadow: Shadow | UnsetType | None = UNSET,
    ) -> Alias:
        """Create or replace an alias: ``{3: 100}`` pins, ``{2: 95, 3: 5}`` splits traffic.

        ``fallback=None`` keeps the alias's flag (a new alias: off). ``shadow`` mirrors a share of the
        alias's requests to another version; ``None`` ends it; left out, the alias keeps its shadow unless
        that version is now among the weights. The weights replaced are kept as ``previous``.
        """
        check_alias_name(alias)
        async with self._transaction() as session:
            model_id = await lookups.lock_model(session, name)
            row = await write_alias(
                session, model=name, model_id=model_id, alias=alias, weights=weights, fallback=fallback, shadow=shadow
            )
        await self._changed(name)
        return alias_from_row(name, row)

    async def delete_alias(self, name: str, alias: str) -> Alias:
        """Remove an alias (never ``default``: a bare model name resolves through it); the alias removed."""
        async with self._transaction() as session:
            model_id = await lookups.lock_model(session, name)
            if alias == DEFAULT_ALIAS:
                raise Conflict(
                    f"the {DEFAULT_ALIAS!r} alias cannot be deleted: a bare model name resolves through it;"
                    " point it at another version instead",
                    model=name,
                    alias=alias,
                )
            stmt = delete(AliasRow).where(AliasRow.model_id == model_id, AliasRow.name == alias).returning(AliasRow)
            stmt = stmt.execution_options(synchronize_session=False)
            row = await session.scalar(stmt) if _alias_name(alias) else None
            if row is None:
                raise await lookups.alias_not_found(session, name, alias=alias, model_id=model_id)
        await self._changed(name)
        return alias_from_row(name, row)

    async def set_status(self, name: str, version: int, status: VersionStatus) -> ModelVersion:
        """Mark a version active, deprecated (still served) or archived (never resolved)."""
        return await self.update_version(name, version, status=status)

    async def update_version(
        self,
        name: str,
        version: int,
        *,
        status: VersionStatus | UnsetType = UNSET,
        description: str | UnsetType | None = UNSET,
        overrides: Mapping[str, int | float] | UnsetType = UNSET,
    ) -> ModelVersion:
        """Change a version's status, description or serving overrides (replaced whole), in one transaction.

        Archiving a version an alias still sends traffic to (weights or shadow) is a ``Conflict``
        naming the aliases: move them first.
        """
        if not isinstance(status, UnsetType) and status not in VERSION_STATUSES:
            raise InvalidInput(f"invalid status {status!r}: one of {', '.join(VERSION_STATUSES)}", field="status")
        changes: dict[str, Any] = {}
        async with self._transaction() as session:
            model_id = await lookups.lock_model(session, name)
            row = await lookups.live_version(session, name, model_id=model_id, version=version)
            if not isinstance(status, UnsetType) and status != row.status:
                if status == "archived":
                    await _refuse_if_routed(session, name, model_id=model_id, version=version, change="archive")
                changes["status"] = status
            if not isinstance(description, UnsetType) and description != row.description:
                changes["description"] = description
            if not isinstance(overrides, UnsetType):
                signature = msgspec.convert(row.signature, ModelSignature)
                changes["overrides"] = check_overrides(overrides, signature=signature)
            if changes:
                row = await _update(session, model_id=model_id, version=version, values=changes)
        if changes:
            await self._changed(name)
        return version_from_row(name, row)

    async def delete_version(self, name: str, version: int) -> ModelVersion:
        """Soft delete: archived and hidden from then on; the artifact and the number are kept, never reused.

        A version an alias still sends traffic to is a ``Conflict`` naming the aliases.
        """
        async with self._transaction() as session:
            model_id = await lookups.lock_model(session, name)
            await lookups.live_version(session, name, model_id=model_id, version=version)
            await _refuse_if_routed(session, name, model_id=model_id, version=version, change="delete")
            values = {"status": "archived", "deleted_at": func.now()}
            row = await _update(session, model_id=model_id, version=version, values=values)
        await self._changed(name)
        return version_from_row(name, row)

    async def artifact(self, sha256: str) -> bytes:
        """The verified bytes of an artifact stored in Postgres."""
        async with self._transaction() as session:
            return await self._artifacts.get(session, sha256)

    async def _changed(self, name: str) -> None:
        if self._on_change is None:
            return
        try:
            await self._on_change(name)
        except Exception as exc:  # the change is committed: an announcement that failed is only late
            log.warning("registry.notify_failed", model=name, error=str(exc) or type(exc).__name__)

    @contextlib.asynccontextmanager
    async def _transaction(self, *, snapshot: bool = False) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success; ``snapshot``: reads see one moment."""
        with translate_errors():
            async with self._sessionmaker.begin() as session:
                if snapshot:
                    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
                yield session

    @contextlib.asynccontextmanager
    async def _statement(self) -> AsyncIterator[AsyncSession]:
        """A session in autocommit: a single-statement read is one round trip, no BEGIN/COMMIT."""
        with translate_errors():
            async with self._sessionmaker() as session:
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                yield session


def _alias_name(alias: str) -> bool:
    """Whether ``alias`` could name an alias (one that could not is not looked up: it is not found)."""
    try:
        check_alias_name(alias)
    except InvalidInput:
        return False
    return True


async def _refuse_if_routed(session: AsyncSession, name: str, *, model_id: int, version: int, change: str) -> None:
    routed = await lookups.routing_to(session, model_id=model_id, version=version)
    if routed:
        listed = ", ".join(f"{alias} ({how})" for alias, how in routed)
        raise Conflict(
            f"cannot {change} version {version} of model {name!r}: aliases still send it traffic: {listed};"
            " move them first",
            model=name,
            version=version,
            aliases=[alias for alias, _ in routed],
        )


async def _update(session: AsyncSession, *, model_id: int, version: int, values: dict[str, Any]) -> VersionRow:
    stmt = (
        update(VersionRow)
        .where(VersionRow.model_id == model_id, VersionRow.version == version)
        .values(**values)
        .returning(VersionRow)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.scalars(stmt)).one()
