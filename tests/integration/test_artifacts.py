"""The artifact store: chunked round trips, idempotent puts, corruption detection, the local cache."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.models import ModelSignature
from inferq.errors import InvalidInput, ModelLoadFailed, NotFound
from inferq.store.artifacts import CHUNK_SIZE, ArtifactStore, LocalArtifactCache, digest, fetch
from inferq.store.registry import Registry
from inferq.store.tables import ArtifactRow, ChunkRow

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


async def _put(sessionmaker: async_sessionmaker[AsyncSession], data: bytes) -> str:
    async with sessionmaker.begin() as session:
        return await ArtifactStore().put(session, data)


async def _get(sessionmaker: async_sessionmaker[AsyncSession], sha256: str) -> bytes:
    async with sessionmaker() as session:
        return await ArtifactStore().get(session, sha256)


async def _chunk_sizes(sessionmaker: async_sessionmaker[AsyncSession], sha256: str) -> list[int]:
    stmt = select(func.length(ChunkRow.data)).where(ChunkRow.sha256 == sha256).order_by(ChunkRow.seq)
    async with sessionmaker() as session:
        return list((await session.scalars(stmt)).all())


async def test_round_trip_across_chunks(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    data = secrets.token_bytes(5 * MIB // 2)
    sha256 = await _put(sessionmaker, data)
    assert sha256 == digest(data)
    assert CHUNK_SIZE == MIB
    assert await _chunk_sizes(sessionmaker, sha256) == [MIB, MIB, MIB // 2]
    assert await _get(sessionmaker, sha256) == data


async def test_empty_artifact_round_trips(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    sha256 = await _put(sessionmaker, b"")
    assert await _get(sessionmaker, sha256) == b""


async def test_put_is_idempotent(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    data = secrets.token_bytes(MIB + 10)
    assert await _put(sessionmaker, data) == await _put(sessionmaker, data)
    async with sessionmaker() as session:
        headers = await session.scalar(select(func.count()).where(ArtifactRow.sha256 == digest(data)))
    assert headers == 1
    assert await _chunk_sizes(sessionmaker, digest(data)) == [MIB, 10]


async def test_corrupt_or_missing_chunks_are_detected(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    data = secrets.token_bytes(2 * MIB + 1)
    sha256 = await _put(sessionmaker, data)
    flipped = bytes([data[MIB] ^ 0xFF]) + data[MIB + 1 : 2 * MIB]
    async with sessionmaker.begin() as session:
        await session.execute(update(ChunkRow).where(ChunkRow.sha256 == sha256, ChunkRow.seq == 1).values(data=flipped))
    with pytest.raises(ModelLoadFailed, match=f"artifact {sha256} is corrupt"):
        await _get(sessionmaker, sha256)
    async with sessionmaker.begin() as session:
        await session.execute(delete(ChunkRow).where(ChunkRow.sha256 == sha256, ChunkRow.seq == 1))
    with pytest.raises(ModelLoadFailed, match=r"corrupt in the database \(1048577 of 2097153 bytes"):
        await _get(sessionmaker, sha256)


async def test_unknown_artifact(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(NotFound, match="not found"):
        await _get(sessionmaker, digest(secrets.token_bytes(8)))
    with pytest.raises(InvalidInput, match="not a sha256"):
        await _get(sessionmaker, "../../etc/passwd")


async def test_registry_serves_registered_artifacts(
    registry: Registry, model_name: str, signature: ModelSignature
) -> None:
    data = secrets.token_bytes(MIB + 1)
    version = await registry.register(name=model_name, model=data, signature=signature)
    assert await registry.artifact(version.sha256) == data


def test_local_cache_writes_atomically_and_reads_verified(tmp_path: Path) -> None:
    cache = LocalArtifactCache(tmp_path)
    data = secrets.token_bytes(1000)
    sha256 = digest(data)
    assert cache.read(sha256) is None
    path = cache.write(sha256, data)
    assert path == tmp_path / "artifacts" / sha256[:2] / f"{sha256}.onnx" == cache.path_for(sha256)
    assert cache.read(sha256) == data
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left behind


def test_local_cache_deletes_a_corrupt_file(tmp_path: Path) -> None:
    cache = LocalArtifactCache(tmp_path)
    data = secrets.token_bytes(1000)
    path = cache.write(digest(data), data)
    path.write_bytes(data[:-1] + b"\x00")
    assert cache.read(digest(data)) is None
    assert not path.exists()
    cache.write(digest(data), data)
    assert cache.read(digest(data)) == data


def test_local_cache_refuses_wrong_bytes_and_bad_names(tmp_path: Path) -> None:
    cache = LocalArtifactCache(tmp_path)
    sha256 = digest(b"one")
    with pytest.raises(ModelLoadFailed, match="do not match"):
        cache.write(sha256, b"two")
    assert not cache.path_for(sha256).exists()
    assert list(tmp_path.rglob("*.tmp")) == []
    for bad in ("../" + sha256[3:], sha256.upper(), sha256[:-1]):
        with pytest.raises(InvalidInput, match="not a sha256"):
            cache.path_for(bad)


async def test_fetch_downloads_once_then_serves_the_cache(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    cache = LocalArtifactCache(tmp_path)
    data = secrets.token_bytes(MIB + 3)
    sha256 = await _put(sessionmaker, data)
    assert await fetch(sessionmaker, cache, sha256) == data
    assert cache.path_for(sha256).read_bytes() == data
    # Served from the cache from now on: the database copy no longer matters.
    async with sessionmaker.begin() as session:
        await session.execute(delete(ChunkRow).where(ChunkRow.sha256 == sha256))
    assert await fetch(sessionmaker, cache, sha256) == data
    # A corrupt cache file is dropped and fetched again; with the database copy gone, that fails loudly.
    cache.path_for(sha256).write_bytes(b"garbage")
    with pytest.raises(ModelLoadFailed):
        await fetch(sessionmaker, cache, sha256)
    assert not cache.path_for(sha256).exists()
