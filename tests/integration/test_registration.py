"""Registering versions: numbering, default alias, moved aliases, concurrency, atomicity."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from inferq.contracts.models import ModelRef, ModelSignature
from inferq.errors import InvalidInput, ModelNotFound
from inferq.store import upserts
from inferq.store.artifacts import ArtifactStore, digest
from inferq.store.registry import Registry
from inferq.store.tables import ArtifactRow, ChunkRow, ModelRow, VersionRow

pytestmark = pytest.mark.integration


async def _count(
    sessionmaker: async_sessionmaker[AsyncSession], column: InstrumentedAttribute[Any], value: object
) -> int:
    async with sessionmaker() as session:
        return await session.scalar(select(func.count()).where(column == value)) or 0


async def test_first_registration_is_version_1_with_the_default_alias(
    registry: Registry, model_name: str, signature: ModelSignature
) -> None:
    data = secrets.token_bytes(100)
    version = await registry.register(
        name=model_name, model=data, signature=signature, description="first", overrides={"max_batch": 16}
    )
    assert (version.model, version.version, version.status) == (model_name, 1, "active")
    assert (version.sha256, version.size_bytes) == (digest(data), 100)
    assert version.signature == signature
    assert (version.description, version.overrides) == ("first", {"max_batch": 16})
    info = await registry.get_model(model_name)
    assert [(a.name, a.weights) for a in info.aliases] == [("default", {1: 100})]
    assert info.description == "first"
    assert info.versions == (version,)


async def test_second_registration_leaves_default_alone_unless_asked(
    registry: Registry, model_name: str, signature: ModelSignature
) -> None:
    await registry.register(name=model_name, model=secrets.token_bytes(10), signature=signature)
    second = await registry.register(
        name=model_name, model=secrets.token_bytes(10), signature=signature, aliases=["prod"]
    )
    assert second.version == 2
    aliases = {a.name: a.weights for a in (await registry.get_model(model_name)).aliases}
    assert aliases == {"default": {1: 100}, "prod": {2: 100}}

    third = await registry.register(
        name=model_name, model=secrets.token_bytes(10), signature=signature, aliases=["default", "prod"]
    )
    aliases = {a.name: a.weights for a in (await registry.get_model(model_name)).aliases}
    assert aliases == {"default": {3: 100}, "prod": {3: 100}}
    assert (await registry.resolve(ModelRef.parse(model_name))).version == third.version == 3


async def test_concurrent_registrations_get_distinct_consecutive_versions(
    registry: Registry, model_name: str, signature: ModelSignature
) -> None:
    registered = await asyncio.gather(
        *(registry.register(name=model_name, model=secrets.token_bytes(32), signature=signature) for _ in range(5))
    )
    assert sorted(v.version for v in registered) == [1, 2, 3, 4, 5]
    info = await registry.get_model(model_name)
    assert [v.version for v in info.versions] == [1, 2, 3, 4, 5]
    assert [(a.name, a.weights) for a in info.aliases] == [("default", {1: 100})]


async def test_same_bytes_registered_twice_share_one_artifact(
    registry: Registry, sessionmaker: async_sessionmaker[AsyncSession], model_name: str, signature: ModelSignature
) -> None:
    data = secrets.token_bytes(50)
    first = await registry.register(name=model_name, model=data, signature=signature)
    second = await registry.register(name=model_name, model=data, signature=signature)
    assert (first.version, second.version) == (1, 2)
    assert first.sha256 == second.sha256
    assert await _count(sessionmaker, ArtifactRow.sha256, first.sha256) == 1


class FailAfterArtifact(ArtifactStore):
    """Stores the artifact (and proves it is there), then fails the registration."""

    async def put(self, session: AsyncSession, data: bytes) -> str:
        sha256 = await super().put(session, data)
        assert await session.scalar(select(func.count()).where(ChunkRow.sha256 == sha256)) == 4
        raise RuntimeError("crash after the artifact insert")


async def test_failure_after_the_artifact_insert_leaves_no_rows(
    sessionmaker: async_sessionmaker[AsyncSession], model_name: str, signature: ModelSignature
) -> None:
    data = secrets.token_bytes(100)
    registry = Registry(sessionmaker, artifacts=FailAfterArtifact(chunk_size=32))
    with pytest.raises(RuntimeError, match="after the artifact insert"):
        await registry.register(name=model_name, model=data, signature=signature)
    assert await _count(sessionmaker, ArtifactRow.sha256, digest(data)) == 0
    assert await _count(sessionmaker, ChunkRow.sha256, digest(data)) == 0
    assert await _count(sessionmaker, ModelRow.name, model_name) == 0


async def test_failure_at_the_last_step_rolls_back_everything(
    registry: Registry,
    sessionmaker: async_sessionmaker[AsyncSession],
    model_name: str,
    signature: ModelSignature,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await registry.register(name=model_name, model=secrets.token_bytes(10), signature=signature)

    async def fail(*_: object, **__: object) -> None:
        raise RuntimeError("crash while moving aliases")

    data = secrets.token_bytes(10)
    with monkeypatch.context() as patch:
        patch.setattr(upserts, "upsert_alias", fail)
        with pytest.raises(RuntimeError, match="moving aliases"):
            await registry.register(name=model_name, model=data, signature=signature, aliases=["prod"])
    assert await _count(sessionmaker, ArtifactRow.sha256, digest(data)) == 0
    assert await _count(sessionmaker, VersionRow.model_id, await _model_id(sessionmaker, model_name)) == 1
    aliases = {a.name: a.weights for a in (await registry.get_model(model_name)).aliases}
    assert aliases == {"default": {1: 100}}
    # The failed attempt did not use up a number: the next registration is version 2.
    second = await registry.register(name=model_name, model=data, signature=signature)
    assert (first.version, second.version) == (1, 2)


async def _model_id(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> int:
    async with sessionmaker() as session:
        model_id = await session.scalar(select(ModelRow.id).where(ModelRow.name == name))
    assert model_id is not None
    return model_id


@pytest.mark.parametrize("bad", ["Upper", "has space", "", "-leading", "x" * 64, "a/b"])
async def test_invalid_model_names_are_refused_before_storing(
    registry: Registry, sessionmaker: async_sessionmaker[AsyncSession], signature: ModelSignature, bad: str
) -> None:
    data = secrets.token_bytes(10)
    with pytest.raises(InvalidInput, match="invalid model name"):
        await registry.register(name=bad, model=data, signature=signature)
    assert await _count(sessionmaker, ArtifactRow.sha256, digest(data)) == 0


async def test_invalid_alias_or_overrides_are_refused(
    registry: Registry, model_name: str, signature: ModelSignature
) -> None:
    with pytest.raises(InvalidInput, match="invalid alias"):
        await registry.register(name=model_name, model=b"x", signature=signature, aliases=["Prod!"])
    with pytest.raises(InvalidInput, match="serving override"):
        await registry.register(name=model_name, model=b"x", signature=signature, overrides={"max_batch": True})
    with pytest.raises(InvalidInput, match="serving override"):
        await registry.register(name=model_name, model=b"x", signature=signature, overrides={"delay": float("nan")})
    with pytest.raises(ModelNotFound):
        await registry.get_model(model_name)
