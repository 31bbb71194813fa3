"""Store fixtures: the run's database migrated once, sessions, a registry, and per-test names."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from test_store_jobs_kit import Tenants

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.jobs import JobStore
from inferq.store.migrate import upgrade
from inferq.store.registry import Registry


@pytest.fixture(scope="session")
async def migrated_db(database_url: str) -> str:
    """The run's database, upgraded to the latest revision once."""
    await upgrade(database_url)
    return database_url


@pytest.fixture(scope="session")
async def engine(migrated_db: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_db)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
def registry(sessionmaker: async_sessionmaker[AsyncSession]) -> Registry:
    return Registry(sessionmaker)


@pytest.fixture
def model_name() -> str:
    """A model name no other test uses (tests share one database and never truncate it)."""
    return f"m-{secrets.token_hex(6)}"


@pytest.fixture
def signature() -> ModelSignature:
    """A dummy classifier signature: four float features in, a label and probabilities out."""
    return ModelSignature(
        inputs=(TensorSpec(name="X", dtype="float32", shape=(None, 4)),),
        outputs=(
            TensorSpec(name="label", dtype="int64", shape=(None,)),
            TensorSpec(name="probabilities", dtype="float32", shape=(None, 3)),
        ),
        task="classifier",
        feature_names=("a", "b", "c", "d"),
        classes=(0, 1, 2),
        class_names=("setosa", "versicolor", "virginica"),
        label_output="label",
        probabilities_output="probabilities",
    )


# Job store fixtures, shared by tests/integration/test_store_jobs*.py (their helpers: test_store_jobs_kit.py).


@pytest.fixture
def store(sessionmaker: async_sessionmaker[AsyncSession]) -> JobStore:
    return JobStore(sessionmaker)


@pytest.fixture
async def tenants(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[Tenants]:
    """Tenants of the test's own (listings and counts see only its jobs), dropped with all they own."""
    made = Tenants(sessionmaker)
    yield made
    await made.drop()


@pytest.fixture
async def tenant(tenants: Tenants) -> str:
    return await tenants.new()


@pytest.fixture
async def empty_database_url(database_url: str) -> AsyncIterator[str]:
    """A second, empty database on the run's server, named after the run's own and dropped after."""
    url = make_url(database_url)
    name = f"{url.database}_scratch_{secrets.token_hex(3)}"
    admin = create_engine(url.set(database="postgres").render_as_string(hide_password=False))
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
