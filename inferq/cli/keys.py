"""``inferq keys create|list|revoke|rotate`` and ``inferq tenants limits``: API keys from the command line.

These talk to Postgres directly (the operator's tool; the admin routes do the same over HTTP), with the
server's pepper: ``INFERQ_API_KEY_PEPPER``, or in development the one kept under ``INFERQ_STATE_DIR``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec

from inferq.cli.output import emit, say
from inferq.cli.runtime import opened
from inferq.contracts.auth import SCOPES, TENANT_PATTERN, Scope, TenantLimits
from inferq.contracts.durations import duration_s
from inferq.errors import InvalidInput
from inferq.settings import Settings
from inferq.store.keys import MIN_PEPPER_CHARS, KeyHasher, KeyStore

PEPPER_FILE = "api-key-pepper"
DEV_KEY_FILE = "dev-api-key"


def resolve_pepper(settings: Settings) -> Settings:
    """``settings`` with the API key pepper: configured, or — in development only (``INFERQ_DEV``, or
    embedded services) — made once and kept in ``INFERQ_STATE_DIR`` (mode 0600) for every process."""
    if settings.auth.api_key_pepper:
        if len(settings.auth.api_key_pepper) < MIN_PEPPER_CHARS:
            raise InvalidInput(
                f"INFERQ_API_KEY_PEPPER is too short: at least {MIN_PEPPER_CHARS} characters "
                "(e.g. `openssl rand -hex 32`)",
                field="INFERQ_API_KEY_PEPPER",
            )
        return settings
    services = settings.services
    if not (settings.dev or services.redis_url is None or services.database_url is None):
        raise InvalidInput(
            "INFERQ_API_KEY_PEPPER is not set: give every API process and `inferq keys` the same random "
            "secret of at least 32 characters (e.g. `openssl rand -hex 32`); changing it invalidates every key",
            field="INFERQ_API_KEY_PEPPER",
        )
    pepper = _kept(services.state_dir / PEPPER_FILE, make=lambda: secrets.token_hex(32))
    return msgspec.structs.replace(settings, auth=msgspec.structs.replace(settings.auth, api_key_pepper=pepper))


async def create_key(settings: Settings, *, tenant: str, scopes: list[str], name: str, expires_in: str | None) -> int:
    checked = _scopes(scopes)
    if re.fullmatch(TENANT_PATTERN, tenant) is None:
        raise InvalidInput(f"tenant {tenant!r}: lower-case letters, digits, '_' and '-' only", field="tenant")
    expires_in_s = None if expires_in is None else duration_s(expires_in, field="--expires-in")
    async with _store(settings) as store:
        new = await store.create(tenant=tenant, scopes=checked, name=name, expires_in_s=expires_in_s)
    say(f"API key {new.view.id} for tenant {tenant!r}: this is the only time its secret is shown")
    emit(new)
    return 0


async def list_keys(settings: Settings, *, tenant: str | None) -> int:
    async with _store(settings) as store:
        emit(await store.list(tenant=tenant))
    return 0


async def revoke_key(settings: Settings, *, key_id: str) -> int:
    async with _store(settings) as store:
        emit(await store.revoke(key_id))
    say(f"revoked; API processes stop accepting it within INFERQ_KEY_CACHE_S ({settings.auth.key_cache_s:g}s)")
    return 0


async def rotate_key(settings: Settings, *, key_id: str, grace: str) -> int:
    async with _store(settings) as store:
        new = await store.rotate(key_id, grace_s=duration_s(grace, field="--grace"))
    say(f"new key {new.view.id}; {key_id} keeps working for {grace}, then expires")
    emit(new)
    return 0


async def tenant_limits(settings: Settings, *, tenant: str, changes: dict[str, float | int | None], reset: bool) -> int:
    """Show a tenant's limits, or set the given ones (``reset``: back to the server's defaults first)."""
    async with _store(settings) as store:
        given = {k: v for k, v in changes.items() if v is not None}
        existing = await store.limits(tenant)  # an unknown tenant is an error, never made by a typo
        if not given and not reset:
            emit(existing)
            return 0
        current = {} if reset else msgspec.to_builtins(existing)
        try:
            limits = msgspec.convert({**current, **given}, TenantLimits)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"invalid limit: {exc}") from None
        emit(await store.set_limits(tenant, limits))
    say(f"API processes apply them within INFERQ_KEY_CACHE_S ({settings.auth.key_cache_s:g}s)")
    return 0


async def dev_key(settings: Settings, store: KeyStore) -> str:
    """The development key (tenant ``default``, every scope), made once and kept in the state dir."""
    path = settings.services.state_dir / DEV_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    new = await store.create(tenant="default", scopes=SCOPES, name="make dev")
    return _kept(path, make=lambda: new.key)


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[KeyStore]:
    """The key store over the configured (or embedded) database, with the server's pepper."""
    settings = resolve_pepper(settings)
    assert settings.auth.api_key_pepper is not None
    async with opened(settings) as rt:
        yield KeyStore(rt.sessions, hasher=KeyHasher(settings.auth.api_key_pepper))


def _kept(path: Path, *, make: Callable[[], str]) -> str:
    """The secret in ``path``, made (mode 0600, never overwritten) when it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    value = make()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _scopes(names: list[str]) -> tuple[Scope, ...]:
    unknown = sorted(set(names) - set(SCOPES))
    if unknown or not names:
        raise InvalidInput(
            f"scopes must be among {', '.join(SCOPES)} (got {', '.join(names) or 'none'})", field="scopes"
        )
    return tuple(n for n in SCOPES if n in names)
