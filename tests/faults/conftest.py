"""Fault-test fixtures: the run's database migrated once, and a ``Stack`` per test (own Redis, own prefix,
own processes, the run's API key pepper and a key of its own), torn down even when the test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from inferq.settings import Settings
from inferq.store.migrate import upgrade

from .harness import OwnPostgres, Stack


@pytest.fixture(scope="session")
async def migrated_database(database_url: str) -> str:
    await upgrade(database_url)
    return database_url


@pytest.fixture(scope="session")
def pepper(settings: Settings) -> str:
    """The run's API key pepper (tests/conftest.py's ``TEST_PEPPER``, through the run's settings)."""
    assert settings.auth.api_key_pepper
    return settings.auth.api_key_pepper


@pytest.fixture
async def stack(migrated_database: str, pepper: str, tmp_path: Path) -> AsyncIterator[Stack]:
    opened = await Stack.open(tmp_path, migrated_database, pepper=pepper)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[OwnPostgres]:
    server = OwnPostgres(tmp_path).start()
    try:
        await upgrade(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pg_stack(own_postgres: OwnPostgres, pepper: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack whose database is the test's own Postgres (stopped and started by the test)."""
    root = tmp_path / "stack"
    root.mkdir()
    opened = await Stack.open(root, own_postgres.url, pepper=pepper)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed fault test carries every worker's task and thread stacks (SIGUSR1, before the stack is
    torn down): a stall in CI explains itself instead of only timing out."""
    report = yield
    if report.when == "call" and report.failed:
        from .diagnostics import worker_stacks

        report.sections.append(("worker stacks", worker_stacks()))
    return report
