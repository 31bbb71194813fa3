"""Schema migrations: upgrade to the latest revision under an advisory lock, and report revisions."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from inferq.store.database import create_engine, translate_errors

MIGRATIONS = Path(__file__).with_name("migrations")
# NOTE: one fixed key for every inferq process on a database; pg_advisory_xact_lock takes a bigint.
_LOCK_KEY = 0x696E_6665_7271  # "inferq"


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no ``alembic.ini`` involved)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    """The newest revision this inferq ships."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError(f"no migrations under {MIGRATIONS}")
    return revision


async def upgrade(database_url: str, *, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` in one transaction, one process at a time.

    Concurrent callers (several processes starting at once) queue on a transaction-scoped
    advisory lock; whoever comes second finds the schema current and does nothing.
    """
    engine = create_engine(database_url, pool_size=1, max_overflow=0, command_timeout_s=None, pre_ping=False)
    try:
        with translate_errors():
            async with engine.connect() as connection:
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                await connection.run_sync(_upgrade, revision=revision)
                await connection.commit()
    finally:
        await engine.dispose()


async def current(database_url: str) -> str | None:
    """The database's revision, ``None`` when it was never migrated."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0, pre_ping=False)
    try:
        with translate_errors():
            async with engine.connect() as connection:
                return await connection.run_sync(_current)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, *, revision: str) -> None:
    config = alembic_config()
    # env.py runs on this connection, inside our transaction (Postgres DDL is transactional).
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
