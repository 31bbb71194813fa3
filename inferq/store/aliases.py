"""Alias writes on an open session: weights, shadow, fallback and the previous weights, checked together."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from msgspec import UNSET, UnsetType
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.contracts.models import ModelSignature, Shadow
from inferq.store import lookups, upserts
from inferq.store.records import weights_from_json
from inferq.store.tables import AliasRow
from inferq.store.traffic import check_shadow, check_weights


async def write_alias(
    session: AsyncSession,
    *,
    model: str,
    model_id: int,
    alias: str,
    weights: Mapping[int, int],
    fallback: bool | None = None,
    shadow: Shadow | UnsetType | None = UNSET,
) -> AliasRow:
    """Create or replace ``alias``; the caller holds the model's lock (``lookups.lock_model``).

    ``fallback=None`` keeps the alias's flag. ``shadow``: ``None`` clears it; ``UNSET`` keeps the alias's
    shadow (checked again against the new weights) unless its version is now weighted: it graduated to
    live traffic. ``previous`` becomes the weights replaced, when they change (what a rollback restores).
    """
    rows = await lookups.version_rows(session, model_id)
    statuses = {version: lookups.standing(row) for version, row in rows.items()}
    clean = check_weights(model, weights, statuses=statuses)
    current = await _current(session, model_id=model_id, alias=alias)
    if isinstance(shadow, UnsetType):
        kept = msgspec.convert(current.shadow, Shadow) if current is not None and current.shadow else None
        shadow = kept if kept is not None and kept.version not in clean else None
    if shadow is not None:
        involved = [v for v in (shadow.version, *clean) if v in rows]
        signatures = {v: msgspec.convert(rows[v].signature, ModelSignature) for v in involved}
        check_shadow(model, shadow, weights=clean, statuses=statuses, signatures=signatures)
    previous = None
    if current is not None:
        replaced = weights_from_json(current.weights)
        kept_previous = weights_from_json(current.previous) if current.previous is not None else None
        previous = replaced if replaced != clean else kept_previous
    return await upserts.upsert_alias(
        session, model_id=model_id, alias=alias, weights=clean, fallback=fallback, shadow=shadow, previous=previous
    )


async def _current(session: AsyncSession, *, model_id: int, alias: str) -> AliasRow | None:
    stmt = select(AliasRow).where(AliasRow.model_id == model_id, AliasRow.name == alias)
    return await session.scalar(stmt.execution_options(populate_existing=True))
