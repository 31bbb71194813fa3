"""Session fixtures: real Redis and Postgres (configured or embedded), isolated per test run.

With ``INFERQ_REDIS_URL`` / ``INFERQ_DATABASE_URL`` set, the tests use those servers but never
their data: every run creates its own database and its own key prefix, and removes both at the
end. Unset, embedded servers are started under a temporary state dir (the ``make dev`` path).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import URL, make_url

from inferq.embedded import started_services
from inferq.settings import AuthSettings, EngineSettings, ServiceSettings, Settings

RUN_ID = secrets.token_hex(4)


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSettings]:
    """The servers for this run: configured by environment, else embedded (stopped at the end)."""
    configured = ServiceSettings(
        redis_url=os.environ.get("INFERQ_REDIS_URL") or None,
        database_url=os.environ.get("INFERQ_DATABASE_URL") or None,
        state_dir=tmp_path_factory.mktemp("state"),
    )
    with started_services(configured, persist=False) as services:
        yield services


@pytest.fixture(scope="session")
def key_prefix(service_urls: ServiceSettings) -> Iterator[str]:
    """A key prefix of this run's own; every key under it is deleted at the end."""
    prefix = f"iqtest-{RUN_ID}"
    yield prefix
    asyncio.run(_delete_keys(service_urls.redis_url or "", prefix))


@pytest.fixture(scope="session")
def redis_url(service_urls: ServiceSettings, key_prefix: str) -> str:
    assert service_urls.redis_url
    return service_urls.redis_url


@pytest.fixture(scope="session")
def database_url(service_urls: ServiceSettings) -> Iterator[str]:
    """A fresh, empty database of this run's own (``postgresql://`` form), dropped at the end."""
    assert service_urls.database_url
    server = make_url(service_urls.database_url)
    name = f"inferq_test_{RUN_ID}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# Every test API shares one pepper, and quotas no test reaches unless it sets a tenant's own limits.
TEST_PEPPER = "test-pepper-" + "0123456789abcdef" * 3
TEST_AUTH = AuthSettings(api_key_pepper=TEST_PEPPER, key_rate_per_s=1e6, key_burst=1_000_000, key_concurrency=1_000_000)


@pytest.fixture(scope="session")
def settings(service_urls: ServiceSettings, database_url: str, redis_url: str, key_prefix: str,
             tmp_path_factory: pytest.TempPathFactory) -> Settings:  # fmt: skip
    """Settings for this run, built in code (tests never read the process environment for them)."""
    services = ServiceSettings(
        redis_url=redis_url, database_url=database_url, key_prefix=key_prefix,
        state_dir=service_urls.state_dir,
    )  # fmt: skip
    return Settings(
        services=services,
        engine=EngineSettings(model_root=tmp_path_factory.mktemp("models")),
        auth=TEST_AUTH,
    )


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A migrated database of the test's own, dropped after: for code that acts on every row (task workers)."""
    from inferq.store.migrate import upgrade

    server = make_url(database_url)
    name = f"{server.database}_own_{secrets.token_hex(3)}"
    await _admin(server, f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    await upgrade(url)
    yield url
    await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(server: URL, statement: str) -> None:
    """Run one statement on the server's maintenance database."""
    admin = server.set(database="postgres")
    params: dict[str, Any] = admin.translate_connect_args(username="user")
    if "host" in admin.query:  # unix socket form: postgresql://user@/db?host=/dir
        params["host"] = admin.query["host"]
    conn = await asyncpg.connect(**params)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _delete_keys(url: str, prefix: str) -> None:
    if not url:
        return
    client = aioredis.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.unlink(key)
    except OSError:
        pass  # the server of a fault test may already be gone
    finally:
        await client.aclose()
