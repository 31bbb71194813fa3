"""What a CLI command needs around it: services (embedded when unset), the schema, the registry."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from inferq.cli.output import say
from inferq.contracts.names import Names
from inferq.embedded import started_services
from inferq.errors import InvalidInput, ServiceUnavailable
from inferq.settings import ServiceSettings, Settings
from inferq.store import migrate as schema
from inferq.store.artifacts import LocalArtifactCache
from inferq.store.database import async_url, create_engine, create_sessionmaker
from inferq.store.registry import Registry
from inferq.streams.catalog_revisions import CatalogNotifier
from inferq.streams.connection import connect
from inferq.streams.durability import check_redis


@dataclass(frozen=True)
class Runtime:
    """The open resources of one command: resolved service URLs and the model registry."""

    services: ServiceSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    registry: Registry
    artifacts: LocalArtifactCache


@contextlib.asynccontextmanager
async def opened(settings: Settings, *, redis: bool = False) -> AsyncIterator[Runtime]:
    """Open the registry; embedded Postgres (and Redis when asked) if no URL is configured.

    The embedded database is ours, so it is migrated on the way in; a configured one must be
    migrated by the operator (``inferq migrate``) and a stale schema is refused with that advice.
    """
    embedded_db = settings.services.database_url is None
    with started_services(settings.services, redis=redis) as services:
        url = await prepare_database(services.database_url, embedded=embedded_db)
        engine = create_engine(url)
        # With a Redis to tell, registry changes are announced: running APIs and workers reload at once.
        redis_client = connect(services) if services.redis_url is not None else None
        notifier = CatalogNotifier(redis_client, names=Names(services.key_prefix)) if redis_client else None
        try:
            sessions = create_sessionmaker(engine)
            yield Runtime(
                services=services,
                engine=engine,
                sessions=sessions,
                registry=Registry(sessions, on_change=notifier.changed if notifier else None),
                artifacts=LocalArtifactCache(settings.engine.model_root),
            )
        finally:
            if redis_client is not None:
                await redis_client.aclose()
            await engine.dispose()


async def require_safe_redis(settings: Settings, services: ServiceSettings, *, embedded: bool) -> None:
    """Refuse to run on a Redis that would break the guarantees (``UnsafeService``); warn, outside
    development, about one that weakens them. An embedded Redis is a development one."""
    redis = connect(services)
    try:
        await check_redis(redis, dev=settings.dev or embedded)
    finally:
        await redis.aclose()


async def migrate(settings: Settings) -> int:
    """``inferq migrate``: upgrade the configured (or embedded) database to the latest revision."""
    with started_services(settings.services, redis=False) as services:
        url = _database_url(services.database_url)
        await schema.upgrade(url)
        say(f"database schema at revision {await schema.current(url)}")
    return 0


async def prepare_database(url: str | None, *, embedded: bool) -> str:
    """The checked database URL: an embedded database is migrated, a configured one must be current."""
    checked = _database_url(url)
    if embedded:
        await schema.upgrade(checked)
    else:
        await _require_current_schema(checked)
    return checked


def _database_url(url: str | None) -> str:
    _check_url(url)
    assert url is not None  # _check_url refuses a missing URL
    return url


def _check_url(url: str | None) -> str:
    """A configuration mistake in the database URL is the user's to fix: a typed error, exit 2."""
    try:
        return async_url(url or "")
    except ValueError as exc:
        raise InvalidInput(f"INFERQ_DATABASE_URL: {exc}", field="INFERQ_DATABASE_URL") from None


async def _require_current_schema(url: str) -> None:
    current, head = await schema.current(url), schema.head()
    if current != head:
        raise ServiceUnavailable(
            f"database schema is at revision {current or 'none'}, this inferq needs {head}: run `inferq migrate`",
            current=current,
            head=head,
        )
