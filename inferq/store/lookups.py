"""Registry queries on an open session: versions, alias candidates, listings, and not-found errors.

Soft-deleted versions (``deleted_at`` set) are invisible here except to ``version_rows``, which writers use
to refuse traffic to them by name and to keep their numbers.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from sqlalchemy import Text, and_, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.contracts.models import ModelInfo, check_model_name
from inferq.errors import AliasNotFound, InvalidInput, ModelNotFound, NotFound, VersionNotFound
from inferq.store.records import alias_from_row, version_from_row, weights_from_json
from inferq.store.tables import AliasRow, ModelRow, VersionRow
from inferq.store.traffic import Standing

LIVE = VersionRow.deleted_at.is_(None)
MAX_VERSION = 2**31 - 1  # an INTEGER column


def _check_name(name: str) -> None:
    """A name no model can have (a NUL, capitals…) is not looked up: it is simply not found."""
    try:
        check_model_name(name)
    except InvalidInput:
        raise model_not_found(name) from None


def _storable(version: int) -> int:
    """``version`` if a query can carry it; a number past INTEGER is never there, and neither is 0."""
    return version if 1 <= version <= MAX_VERSION else 0


@dataclass(frozen=True)
class Candidates:
    """What an alias offers: its stored weights and its versions that may still be served."""

    weights: dict[str, int]
    versions: list[VersionRow]


async def find_version(session: AsyncSession, name: str, *, version: int) -> VersionRow:
    """The row of ``name@version`` in any status (deleted ones excepted), in one statement; else a not-found error."""
    _check_name(name)
    stmt = (
        select(ModelRow.id, VersionRow)
        .outerjoin(VersionRow, and_(VersionRow.model_id == ModelRow.id, VersionRow.version == _storable(version), LIVE))
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


async def lock_model(session: AsyncSession, name: str) -> int:
    """The model's id, its row locked until commit (``ModelNotFound`` when unknown).

    NOTE: every registry write to a model takes this lock (a registration's version counter takes it too),
    so checks that span rows hold: no alias can start routing to a version being archived meanwhile.
    """
    _check_name(name)
    model_id = await session.scalar(select(ModelRow.id).where(ModelRow.name == name).with_for_update())
    if model_id is None:
        raise model_not_found(name)
    return model_id


async def version_rows(session: AsyncSession, model_id: int) -> dict[int, VersionRow]:
    """Every version of the model by number, deleted ones included."""
    rows = await session.scalars(select(VersionRow).where(VersionRow.model_id == model_id))
    return {row.version: row for row in rows}


async def model_id(session: AsyncSession, name: str) -> int:
    """The model's id (``ModelNotFound`` when unknown)."""
    _check_name(name)
    found = await session.scalar(select(ModelRow.id).where(ModelRow.name == name))
    if found is None:
        raise model_not_found(name)
    return found


async def live_version(session: AsyncSession, name: str, *, model_id: int, version: int) -> VersionRow:
    """The row of a version that is not deleted; else the version's not-found error."""
    stmt = select(VersionRow).where(VersionRow.model_id == model_id, VersionRow.version == _storable(version), LIVE)
    row = await session.scalar(stmt.execution_options(populate_existing=True))
    if row is None:
        raise await version_not_found(session, name, version=version, model_id=model_id)
    return row


def standing(row: VersionRow) -> Standing:
    """A version's status, or ``deleted``."""
    return "deleted" if row.deleted_at is not None else typing.cast(Standing, row.status)


async def routing_to(session: AsyncSession, *, model_id: int, version: int) -> list[tuple[str, str]]:
    """The aliases still sending ``version`` traffic, by name, and how: ``("prod", "weights")``, ``("c", "shadow")``."""
    rows = await session.scalars(select(AliasRow).where(AliasRow.model_id == model_id).order_by(AliasRow.name))
    found = []
    for row in rows:
        if version in weights_from_json(row.weights):
            found.append((row.name, "weights"))
        elif row.shadow is not None and row.shadow.get("version") == version:
            found.append((row.name, "shadow"))
    return found


async def model_infos(session: AsyncSession, *, name: str | None = None) -> list[ModelInfo]:
    """Every model (or the one named) with its versions and aliases, ordered by name and number."""
    models = select(ModelRow).order_by(ModelRow.name)
    versions = select(ModelRow.name, VersionRow).join(ModelRow).where(LIVE).order_by(VersionRow.version)
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
    """The error for an unknown (or deleted) version, listing the versions the model has."""
    stmt = select(VersionRow.version, VersionRow.status).where(VersionRow.model_id == model_id, LIVE)
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
