"""Fault-test fixtures: the run's database migrated once, and a ``Stack`` per test (own Redis, own prefix,
own processes), torn down even when the test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferq.store.migrate import upgrade

from .harness import Stack


@pytest.fixture(scope="session")
async def migrated_database(database_url: str) -> str:
    await upgrade(database_url)
    return database_url


@pytest.fixture
async def stack(migrated_database: str, tmp_path: Path) -> AsyncIterator[Stack]:
    opened = Stack.open(tmp_path, migrated_database)
    try:
        yield opened
    finally:
        await opened.close()
