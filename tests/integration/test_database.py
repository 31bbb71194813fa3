"""Connections: URL forms, and a down or hung Postgres failing fast as ServiceUnavailable."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from inferq.contracts.models import ModelRef
from inferq.errors import ServiceUnavailable
from inferq.store import migrate
from inferq.store.artifacts import LocalArtifactCache, fetch
from inferq.store.database import async_url, create_engine, create_sessionmaker, translate_errors
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/inferq", "postgresql+asyncpg://u:p@db:5432/inferq"),
        ("postgres://u:p@db/inferq", "postgresql+asyncpg://u:p@db/inferq"),
        ("postgresql+asyncpg://u@db/inferq", "postgresql+asyncpg://u@db/inferq"),
        ("postgresql://u:p%40ss@db/inferq", "postgresql+asyncpg://u:p%40ss@db/inferq"),
        ("postgresql://u@db/inferq?sslmode=require", "postgresql+asyncpg://u@db/inferq?ssl=require"),
    ],
)
def test_async_url(url: str, expected: str) -> None:
    assert async_url(url) == expected


def test_async_url_keeps_the_unix_socket_directory() -> None:
    parsed = make_url(async_url("postgresql://postgres@/postgres?host=/some/dir"))
    assert (parsed.drivername, parsed.username, parsed.host, parsed.database) == (
        "postgresql+asyncpg",
        "postgres",
        None,
        "postgres",
    )
    assert parsed.query == {"host": "/some/dir"}


@pytest.mark.parametrize("url", ["sqlite:///x.db", "mysql://u@h/db", "postgresql://u@h/db?sslmode=bogus"])
def test_async_url_refuses_what_the_store_cannot_use(url: str) -> None:
    with pytest.raises(ValueError, match=r"PostgreSQL|sslmode"):
        async_url(url)


def test_database_url_in_use_converts(database_url: str) -> None:
    assert make_url(async_url(database_url)).drivername == "postgresql+asyncpg"


@pytest.fixture
def refused_url() -> str:
    """A URL on a local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/inferq"


@pytest.fixture
def hung_url() -> Iterator[str]:
    """A URL on a port that accepts TCP connections and never answers (a hung server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/inferq"


async def test_refused_connection_is_service_unavailable(refused_url: str, tmp_path: Path) -> None:
    engine = create_engine(refused_url, connect_timeout_s=1)
    sessions = create_sessionmaker(engine)
    try:
        with pytest.raises(ServiceUnavailable, match="database unreachable"):
            await Registry(sessions).resolve(ModelRef.parse("wine"))
        with pytest.raises(ServiceUnavailable):
            await Registry(sessions).list_models()
        with pytest.raises(ServiceUnavailable):
            await fetch(sessions, LocalArtifactCache(tmp_path), "0" * 64)
    finally:
        await engine.dispose()
    with pytest.raises(ServiceUnavailable):
        await migrate.upgrade(refused_url)
    with pytest.raises(ServiceUnavailable):
        await migrate.current(refused_url)


async def test_hung_server_fails_within_the_connect_timeout(hung_url: str) -> None:
    engine = create_engine(hung_url, connect_timeout_s=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            await Registry(create_sessionmaker(engine)).resolve(ModelRef.parse("wine@2"))
    finally:
        await engine.dispose()
    assert time.monotonic() - started < 3
    assert caught.value.retryable


async def test_slow_statement_hits_the_command_timeout(migrated_db: str) -> None:
    engine = create_engine(migrated_db, command_timeout_s=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable), translate_errors():
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(5)"))
    finally:
        await engine.dispose()
    assert time.monotonic() - started < 3
