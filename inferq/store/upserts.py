"""Registry writes on an open session: the model's version counter and alias upserts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.contracts.models import Shadow
from inferq.store.records import weights_to_json
from inferq.store.tables import AliasRow, ModelRow


async def next_version(session: AsyncSession, *, name: str, description: str | None) -> tuple[int, int]:
    """Create the model or bump its counter; return ``(model_id, new version number)``.

    NOTE: the upsert takes the model row's lock until commit (as SELECT … FOR UPDATE would), so
    concurrent registrations of one name get consecutive numbers; a rollback returns the number.
    """
    stmt = pg_insert(ModelRow).values(name=name, description=description, last_version=1)
    upsert = stmt.on_conflict_do_update(
        index_elements=[ModelRow.name],
        set_={
            "last_version": ModelRow.last_version + 1,
            "description": func.coalesce(ModelRow.description, stmt.excluded.description),
        },
    ).returning(ModelRow.id, ModelRow.last_version)
    row = (await session.execute(upsert)).one()
    return row.id, row.last_version


async def upsert_alias(
    session: AsyncSession,
    *,
    model_id: int,
    alias: str,
    weights: Mapping[int, int],
    fallback: bool | None = None,
    shadow: Shadow | None = None,
    previous: Mapping[int, int] | None = None,
) -> AliasRow:
    """Point ``alias`` at ``weights`` with ``shadow`` and ``previous`` as given; ``fallback=None`` keeps an
    existing alias's fallback flag (a new alias gets none)."""
    stmt = pg_insert(AliasRow).values(
        model_id=model_id,
        name=alias,
        weights=weights_to_json(weights),
        fallback=bool(fallback),
        shadow=msgspec.to_builtins(shadow) if shadow is not None else None,
        previous=weights_to_json(previous) if previous is not None else None,
    )
    changes: dict[str, Any] = {
        "weights": stmt.excluded.weights,
        "shadow": stmt.excluded.shadow,
        "previous": stmt.excluded.previous,
        "updated_at": func.now(),
    }
    if fallback is not None:
        changes["fallback"] = stmt.excluded.fallback
    upsert = stmt.on_conflict_do_update(index_elements=[AliasRow.model_id, AliasRow.name], set_=changes)
    returning = upsert.returning(AliasRow).execution_options(populate_existing=True)  # not a stale identity
    return (await session.scalars(returning)).one()
