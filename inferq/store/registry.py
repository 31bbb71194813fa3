"""The model registry: register versions, resolve references, manage aliases and statuses."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Mapping, Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.models import (
    DEFAULT_ALIAS,
    VERSION_STATUSES,
    Alias,
    ModelInfo,
    ModelRef,
    ModelSignature,
    ModelVersion,
    VersionStatus,
    check_alias_name,
    check_model_name,
)
from inferq.errors import InvalidInput, VersionNotFound
from inferq.store import lookups, upserts
from inferq.store.artifacts import ArtifactStore
from inferq.store.database import translate_errors
from inferq.store.records import (
    alias_from_row,
    check_overrides,
    signature_to_json,
    version_from_row,
    weights_from_json,
)
from inferq.store.tables import ModelRow, VersionRow
from inferq.store.traffic import check_weights, pick_version


class Registry:
    """Models, versions and aliases in Postgres; every method returns contracts, never rows."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        artifacts: ArtifactStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._artifacts = artifacts or ArtifactStore()
        self._rng = rng or random.Random()

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
        each of ``aliases`` (``default`` included) is created or moved to pin the new version.
        ``description`` describes the version, and the model too while the model has none.
        """
        check_model_name(name)
        moved = [check_alias_name(alias) for alias in dict.fromkeys(aliases)]
        serving = check_overrides(overrides)
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
            for alias in dict.fromkeys(pinned):
                await upserts.upsert_alias(session, model_id=model_id, alias=alias, weights={version: 100})
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
        """``name@version`` in any status (archived included)."""
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

    async def set_alias(self, name: str, alias: str, *, weights: Mapping[int, int], fallback: bool = False) -> Alias:
        """Create or replace an alias: ``{3: 100}`` pins, ``{2: 95, 3: 5}`` splits traffic."""
        check_alias_name(alias)
        async with self._transaction() as session:
            model_id, statuses = await lookups.version_statuses(session, name)
            clean = check_weights(name, weights, statuses=statuses)
            row = await upserts.upsert_alias(session, model_id=model_id, alias=alias, weights=clean, fallback=fallback)
        return alias_from_row(name, row)

    async def set_status(self, name: str, version: int, status: VersionStatus) -> ModelVersion:
        """Mark a version active, deprecated (still served) or archived (never resolved)."""
        if status not in VERSION_STATUSES:
            raise InvalidInput(f"invalid status {status!r}: one of {', '.join(VERSION_STATUSES)}", field="status")
        model_id = select(ModelRow.id).where(ModelRow.name == name).scalar_subquery()
        stmt = (
            update(VersionRow)
            .where(VersionRow.model_id == model_id, VersionRow.version == version)
            .values(status=status)
            .returning(VersionRow)
            .execution_options(synchronize_session=False)
        )
        async with self._transaction() as session:
            row = await session.scalar(stmt)
            if row is None:
                raise await lookups.version_missing(session, name, version=version)
        return version_from_row(name, row)

    async def artifact(self, sha256: str) -> bytes:
        """The verified bytes of an artifact stored in Postgres."""
        async with self._transaction() as session:
            return await self._artifacts.get(session, sha256)

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
