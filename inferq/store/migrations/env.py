"""Alembic environment: runs on the caller's connection (``inferq.store.migrate``) or on its own."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from inferq.store.database import async_url
from inferq.store.tables import Base

config = context.config
target_metadata = Base.metadata


def configured_url() -> str:
    """``sqlalchemy.url`` from the config, else ``INFERQ_DATABASE_URL`` (the ``alembic`` CLI path)."""
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("INFERQ_DATABASE_URL")
    if not url:
        raise RuntimeError("set INFERQ_DATABASE_URL (or sqlalchemy.url) to run alembic on its own")
    return async_url(url)


def run_offline() -> None:
    """Emit SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(url=configured_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    """Run the migrations on an open connection (inside the caller's transaction, if it has one)."""
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_own_engine() -> None:
    """The ``alembic`` command line path: a throwaway async engine of our own."""
    engine = create_async_engine(configured_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_offline()
elif (shared := config.attributes.get("connection")) is not None:
    run_on(shared)
else:
    asyncio.run(run_own_engine())
