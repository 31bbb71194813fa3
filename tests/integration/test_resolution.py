"""Resolving references: by name, version and alias; weighted splits; statuses; helpful errors."""

from __future__ import annotations

import random
import secrets
from collections import Counter

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.models import ModelRef, ModelSignature
from inferq.errors import AliasNotFound, Conflict, ModelNotFound, VersionNotFound
from inferq.store.registry import Registry
from inferq.store.tables import ModelRow, VersionRow

pytestmark = pytest.mark.integration
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def three_versions(registry: Registry, model_name: str, signature: ModelSignature) -> str:
    """``model_name`` with versions 1, 2, 3; ``default`` → 1, ``prod`` → 2."""
    await registry.register(name=model_name, model=secrets.token_bytes(16), signature=signature)
    await registry.register(name=model_name, model=secrets.token_bytes(16), signature=signature, aliases=["prod"])
    await registry.register(name=model_name, model=secrets.token_bytes(16), signature=signature)
    return model_name


async def _resolve(registry: Registry, text: str, *, rng: random.Random | None = None) -> int:
    return (await registry.resolve(ModelRef.parse(text), rng=rng)).version


async def test_bare_name_resolves_the_default_alias(registry: Registry, three_versions: str) -> None:
    assert await _resolve(registry, three_versions) == 1


async def test_version_and_alias_references(registry: Registry, three_versions: str) -> None:
    assert await _resolve(registry, f"{three_versions}@3") == 3
    assert await _resolve(registry, f"{three_versions}@2") == 2
    assert await _resolve(registry, f"{three_versions}@prod") == 2
    resolved = await registry.resolve(ModelRef.parse(f"{three_versions}@3"))
    assert resolved == await registry.get_version(three_versions, 3)
    assert resolved.key == f"{three_versions}@3"


async def test_weighted_alias_splits_traffic_deterministically(registry: Registry, three_versions: str) -> None:
    await registry.set_alias(three_versions, "canary", weights={1: 90, 3: 10})
    draws = [await _resolve(registry, f"{three_versions}@canary", rng=random.Random(11)) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same pick
    rng = random.Random(20261129)
    sequence = [await _resolve(registry, f"{three_versions}@canary", rng=rng) for _ in range(1000)]
    assert Counter(sequence) == {1: 900, 3: 100}
    assert sequence[:12] == [1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 1, 1]
    # A pin always answers the same version.
    await registry.set_alias(three_versions, "canary", weights={3: 100})
    pinned = Counter([await _resolve(registry, f"{three_versions}@canary", rng=rng) for _ in range(50)])
    assert pinned == {3: 50}


async def _archive_behind_aliases(sessionmaker: Sessions, name: str, version: int) -> None:
    """Archive a version aliases still route to, as a registry could before archiving them was refused."""
    model_id = select(ModelRow.id).where(ModelRow.name == name).scalar_subquery()
    async with sessionmaker.begin() as session:
        stmt = update(VersionRow).where(VersionRow.model_id == model_id, VersionRow.version == version)
        await session.execute(stmt.values(status="archived"))


async def test_archived_versions_are_skipped_by_aliases_and_refused_by_number(
    registry: Registry, three_versions: str, sessionmaker: Sessions
) -> None:
    await registry.set_alias(three_versions, "canary", weights={1: 50, 3: 50})
    with pytest.raises(Conflict, match="aliases still send it traffic: canary"):
        await registry.set_status(three_versions, 3, "archived")
    await _archive_behind_aliases(sessionmaker, three_versions, 3)  # left by an older registry: still skipped
    rng = random.Random(7)
    counts = Counter([await _resolve(registry, f"{three_versions}@canary", rng=rng) for _ in range(200)])
    assert counts == {1: 200}
    with pytest.raises(VersionNotFound, match=r"version 3 of model .* is archived"):
        await registry.resolve(ModelRef.parse(f"{three_versions}@3"))
    assert (await registry.get_version(three_versions, 3)).status == "archived"


async def test_alias_with_only_archived_versions_does_not_resolve(
    registry: Registry, three_versions: str, sessionmaker: Sessions
) -> None:
    await _archive_behind_aliases(sessionmaker, three_versions, 2)
    with pytest.raises(VersionNotFound, match=r"alias 'prod' .* points only at archived versions \(2\)"):
        await registry.resolve(ModelRef.parse(f"{three_versions}@prod"))


async def test_deprecated_versions_are_still_served(registry: Registry, three_versions: str) -> None:
    await registry.set_status(three_versions, 1, "deprecated")
    resolved = await registry.resolve(ModelRef.parse(three_versions))
    assert (resolved.version, resolved.status) == (1, "deprecated")
    assert (await registry.resolve(ModelRef.parse(f"{three_versions}@1"))).status == "deprecated"


async def test_unknown_model(registry: Registry, model_name: str) -> None:
    for text in (model_name, f"{model_name}@1", f"{model_name}@prod"):
        with pytest.raises(ModelNotFound, match=f"model '{model_name}' not found") as caught:
            await registry.resolve(ModelRef.parse(text))
        assert caught.value.details == {"model": model_name}


async def test_unknown_version_lists_the_versions(registry: Registry, three_versions: str) -> None:
    await registry.set_status(three_versions, 2, "deprecated")
    with pytest.raises(VersionNotFound) as caught:
        await registry.resolve(ModelRef.parse(f"{three_versions}@7"))
    assert caught.value.message == f"model '{three_versions}' has no version 7; versions: 1, 2 (deprecated), 3"
    assert caught.value.details["versions"] == [1, 2, 3]
    with pytest.raises(VersionNotFound, match="has no version 9"):
        await registry.get_version(three_versions, 9)


async def test_unknown_alias_lists_the_aliases(registry: Registry, three_versions: str) -> None:
    with pytest.raises(AliasNotFound) as caught:
        await registry.resolve(ModelRef.parse(f"{three_versions}@staging"))
    assert caught.value.message == f"model '{three_versions}' has no alias 'staging'; aliases: default, prod"
    assert caught.value.details["aliases"] == ["default", "prod"]
