"""API keys for the e2e processes: the run's pepper and quotas as environment, and keys made in Postgres."""

from __future__ import annotations

from inferq.contracts.auth import SCOPES, Scope
from inferq.settings import Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.keys import KeyHasher, KeyStore


def auth_env(settings: Settings) -> dict[str, str]:
    """``INFERQ_*`` for an API process: the run's pepper (tests/conftest.py's ``TEST_PEPPER``) and quotas no
    e2e test reaches, the per-address lookup bucket included (a burst on a cold key cache spends it)."""
    auth = settings.auth
    assert auth.api_key_pepper
    return {
        "INFERQ_API_KEY_PEPPER": auth.api_key_pepper,
        "INFERQ_KEY_RATE_PER_S": str(auth.key_rate_per_s),
        "INFERQ_KEY_BURST": str(auth.key_burst),
        "INFERQ_KEY_CONCURRENCY": str(auth.key_concurrency),
        "INFERQ_AUTH_IP_RATE": "1000000",
        "INFERQ_AUTH_IP_BURST": "1000000",
    }


async def make_key(settings: Settings, *scopes: Scope, tenant: str = "default", database_url: str = "") -> str:
    """A new key for ``tenant`` with ``scopes`` (all when none), in the run's database or ``database_url``."""
    url = database_url or settings.services.database_url
    assert url
    assert settings.auth.api_key_pepper
    engine = create_engine(url)
    try:
        keys = KeyStore(create_sessionmaker(engine), hasher=KeyHasher(settings.auth.api_key_pepper))
        return (await keys.create(tenant=tenant, scopes=scopes or SCOPES, name="e2e tests")).key
    finally:
        await engine.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
