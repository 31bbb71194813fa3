"""Registry queries on an open session: versions, alias candidates, listings, and not-found errors."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from sqlalchemy import Text, and_, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.contracts.models import ModelInfo, VersionStatus
from inferq.errors import AliasNotFound, ModelNotFound, NotFound, VersionNotFound
from inferq.store.records import alias_from_row, version_from_row
from inferq.store.tables import AliasRow, ModelRow, VersionRow


@dataclass(frozen=True)
class Candidates:
    """What an alias offers: its stored weights and its versions that may still be served."""

    weights: dict[str, int]
    versions: list[VersionRow]


async def find_version(session: AsyncSession, name: str, *, version: int) -> VersionRow:
    """The row of ``name@version`` in any status, in one statement; else a not-found error."""
    stmt = (
        select(ModelRow.id, VersionRow)
        .outerjoin(VersionRow, and_(VersionRow.model_id == ModelRow.id, VersionRow.version == version))
        .where(ModelRow.name == name)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        raise model_not_found(name)
    if row[1] is None:
        raise await version_not_found(session, name, version=version, model_id=row[0])
    return row[1]


async def find_candidates(session: AsyncSession, name: str, *, alias: str) -> Candidates:
    """The alias's weights and its non-archived versions, in one statement; else a not-found error."""
    listed = AliasRow.weights.op("?", is_comparison=True)(cast(VersionRow.version, Text))
    stmt = (
        select(ModelRow.id, AliasRow.weights, VersionRow)
        .outerjoin(AliasRow, and_(AliasRow.model_id == ModelRow.id, AliasRow.name == alias))
        .outerjoin(
            VersionRow,
            and_(VersionRow.model_id == ModelRow.id, VersionRow.status != "archived", listed),
        )
        .where(ModelRow.name == name)
        .order_by(VersionRow.version)
    )
    rows = (await session.execute(stmt)).all()
    if not rows:
        raise model_not_found(name)
    model_id, weights, _ = rows[0]
    if weights is None:
        raise await alias_not_found(session, name, alias=alias, model_id=model_id)
    return Candidates(weights=weights, versions=[row[2] for row in rows if row[2] is not None])


async def version_statuses(session: AsyncSession, name: str) -> tuple[int, dict[int, VersionStatus]]:
    """The model's id and the status of each of its versions (``ModelNotFound`` when unknown)."""
    stmt = (
        select(ModelRow.id, VersionRow.version, VersionRow.status)
        .outerjoin(VersionRow, VersionRow.model_id == ModelRow.id)
        .where(ModelRow.name == name)
    )
    rows = (await session.execute(stmt)).all()
    if not rows:
        raise model_not_found(name)
    statuses = {r.version: typing.cast(VersionStatus, r.status) for r in rows if r.version is not None}
    return rows[0].id, statuses


async def model_infos(session: AsyncSession, *, name: str | None = None) -> list[ModelInfo]:
    """Every model (or the one named) with its versions and aliases, ordered by name and number."""
    models = select(ModelRow).order_by(ModelRow.name)
    versions = select(ModelRow.name, VersionRow).join(ModelRow).order_by(VersionRow.version)
    aliases = select(ModelRow.name, AliasRow).join(ModelRow).order_by(AliasRow.name)
    if name is not None:
        models = models.where(ModelRow.name == name)
        versions = versions.where(ModelRow.name == name)
        aliases = aliases.where(ModelRow.name == name)
    by_model = {row.name: row for row in (await session.scalars(models)).all()}
    version_rows = (await session.execute(versions)).all()
    alias_rows = (await session.execute(aliases)).all()
    return [
        ModelInfo(
            name=model,
            description=row.description,
            created_at=row.created_at,
            versions=tuple(version_from_row(model, v) for m, v in version_rows if m == model),
            aliases=tuple(alias_from_row(model, a) for m, a in alias_rows if m == model),
        )
        for model, row in by_model.items()
    ]


async def version_missing(session: AsyncSession, name: str, *, version: int) -> NotFound:
    """The error for ``name@version`` not existing: the model's, else the version's."""
    model_id = await session.scalar(select(ModelRow.id).where(ModelRow.name == name))
    if model_id is None:
        return model_not_found(name)
    return await version_not_found(session, name, version=version, model_id=model_id)


def model_not_found(name: str) -> ModelNotFound:
    """The error for an unknown model name."""
    return ModelNotFound(f"model {name!r} not found", model=name)


async def version_not_found(session: AsyncSession, name: str, *, version: int, model_id: int) -> VersionNotFound:
    """The error for an unknown version, listing the versions the model has."""
    stmt = select(VersionRow.version, VersionRow.status).where(VersionRow.model_id == model_id)
    rows = (await session.execute(stmt.order_by(VersionRow.version))).all()
    known = ", ".join(f"{r.version}" if r.status == "active" else f"{r.version} ({r.status})" for r in rows)
    return VersionNotFound(
        f"model {name!r} has no version {version}; versions: {known or 'none'}",
        model=name,
        version=version,
        versions=[r.version for r in rows],
    )


async def alias_not_found(session: AsyncSession, name: str, *, alias: str, model_id: int) -> AliasNotFound:
    """The error for an unknown alias, listing the aliases the model has."""
    stmt = select(AliasRow.name).where(AliasRow.model_id == model_id).order_by(AliasRow.name)
    known = list((await session.scalars(stmt)).all())
    return AliasNotFound(
        f"model {name!r} has no alias {alias!r}; aliases: {', '.join(known) or 'none'}",
        model=name,
        alias=alias,
        aliases=known,
    )
