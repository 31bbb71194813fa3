"""Sessions for repositories: a transaction committed on success, or one autocommitted statement."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.store.database import translate_errors


@contextlib.asynccontextmanager
async def transaction(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a transaction, committed on success and rolled back on error."""
    with translate_errors():
        async with sessionmaker.begin() as session:
            yield session


@contextlib.asynccontextmanager
async def statement(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in autocommit: a single-statement read or write is one round trip, no BEGIN/COMMIT."""
    with translate_errors():
        async with sessionmaker() as session:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield session
