"""Content-addressed model artifacts: chunked bytea in Postgres and a sha-checked local file cache."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.errors import InvalidInput, ModelLoadFailed, NotFound
from inferq.store.database import translate_errors
from inferq.store.tables import ArtifactRow, ChunkRow

CHUNK_SIZE = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
log = logging.getLogger(__name__)


def check_sha256(sha256: str) -> str:
    """Accept a lowercase hex sha256 only (it becomes a file name: no path tricks)."""
    if not _SHA256.fullmatch(sha256):
        raise InvalidInput(f"not a sha256 hex digest: {sha256!r}", field="sha256")
    return sha256


def digest(data: bytes) -> str:
    """The artifact id of ``data``: its sha256 in lowercase hex."""
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Artifacts in Postgres, in the caller's transaction: an ``artifacts`` row plus its chunks."""

    def __init__(self, *, chunk_size: int = CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

    async def put(self, session: AsyncSession, data: bytes) -> str:
        """Store ``data`` unless it is already there; return its sha256 (same bytes, one artifact)."""
        sha256 = digest(data)
        # NOTE: a concurrent put of the same bytes waits here for the other transaction to end;
        # when it commits we do nothing, when it rolls back we insert.
        header = (
            pg_insert(ArtifactRow)
            .values(sha256=sha256, size_bytes=len(data))
            .on_conflict_do_nothing(index_elements=[ArtifactRow.sha256])
            .returning(ArtifactRow.sha256)
        )
        if (await session.execute(header)).first() is None:
            return sha256
        view = memoryview(data)
        for seq, start in enumerate(range(0, len(data), self.chunk_size)):
            chunk = bytes(view[start : start + self.chunk_size])
            await session.execute(insert(ChunkRow).values(sha256=sha256, seq=seq, data=chunk))
        return sha256

    async def get(self, session: AsyncSession, sha256: str) -> bytes:
        """The artifact's bytes, re-verified against its sha256 (mismatch: ``ModelLoadFailed``)."""
        check_sha256(sha256)
        size = await session.scalar(select(ArtifactRow.size_bytes).where(ArtifactRow.sha256 == sha256))
        if size is None:
            raise NotFound(f"artifact {sha256} not found", sha256=sha256)
        chunks = await session.scalars(select(ChunkRow.data).where(ChunkRow.sha256 == sha256).order_by(ChunkRow.seq))
        data = b"".join(chunks)
        if len(data) != size or digest(data) != sha256:
            raise ModelLoadFailed(
                f"artifact {sha256} is corrupt in the database ({len(data)} of {size} bytes, sha mismatch)",
                sha256=sha256,
            )
        return data


class LocalArtifactCache:
    """Verified artifact files under ``root/artifacts/<sha[:2]>/<sha>.onnx`` (``INFERQ_MODEL_ROOT``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        """Where the artifact ``sha256`` lives in this cache (whether or not it is there)."""
        check_sha256(sha256)
        return self.root / "artifacts" / sha256[:2] / f"{sha256}.onnx"

    def read(self, sha256: str) -> bytes | None:
        """The cached bytes, or ``None`` when missing; a corrupt file is deleted and counts as missing."""
        path = self.path_for(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if digest(data) != sha256:
            log.warning("artifact.cache_corrupt", extra={"sha256": sha256, "path": str(path)})
            path.unlink(missing_ok=True)
            return None
        return data

    def write(self, sha256: str, data: bytes) -> Path:
        """Verify ``data`` against ``sha256``, then write it atomically (temp file + rename)."""
        path = self.path_for(sha256)
        if digest(data) != sha256:
            raise ModelLoadFailed(f"refusing to cache artifact {sha256}: the bytes do not match", sha256=sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{sha256[:12]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


async def fetch(
    sessionmaker: async_sessionmaker[AsyncSession],
    cache: LocalArtifactCache,
    sha256: str,
    *,
    store: ArtifactStore | None = None,
) -> bytes:
    """The artifact's bytes from the local cache, else from Postgres (then cached for next time)."""
    cached = await asyncio.to_thread(cache.read, sha256)
    if cached is not None:
        return cached
    with translate_errors():
        async with sessionmaker() as session:
            data = await (store or ArtifactStore()).get(session, sha256)
    await asyncio.to_thread(cache.write, sha256, data)
    return data
