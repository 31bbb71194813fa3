"""API keys and tenants' limits in Postgres: made, looked up by id, listed, revoked, rotated.

Only a key's HMAC is stored; making and checking it is ``KeyHasher``'s (the server's pepper never
reaches the database). A key's tenant is created with it when new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

import msgspec
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.auth import KeyView, NewKey, Scope, TenantLimits
from inferq.errors import Conflict, KeyNotFound, NotFound
from inferq.store.sessions import statement, transaction
from inferq.store.tables import ApiKeyRow, TenantRow

MIN_PEPPER_CHARS = 32


class KeyHasher:
    """HMAC-SHA256 of a key's id and secret under the server's pepper (``INFERQ_API_KEY_PEPPER``): a
    stolen ``api_keys`` table is useless without it, and a key cannot be checked without the server."""

    def __init__(self, pepper: str) -> None:
        if len(pepper) < MIN_PEPPER_CHARS:
            raise ValueError(f"the API key pepper must be at least {MIN_PEPPER_CHARS} characters")
        self._pepper = pepper.encode()

    def digest(self, key_id: str, secret: str) -> bytes:
        return hmac.new(self._pepper, f"{key_id}:{secret}".encode(), hashlib.sha256).digest()

    def matches(self, key_id: str, secret: str, stored: bytes) -> bool:
        """Constant time in the secret: the comparison does not stop at the first differing byte."""
        return hmac.compare_digest(self.digest(key_id, secret), stored)


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What authentication needs of a key: its tenant, scopes, hash, validity and the tenant's limits."""

    id: str
    tenant: str
    scopes: frozenset[Scope]
    secret_hash: bytes
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    limits: TenantLimits

    def usable(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class KeyStore:
    """API keys for the API (lookups) and for the operator (``inferq keys``, the admin routes)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, hasher: KeyHasher) -> None:
        self._sessionmaker = sessionmaker
        self._hasher = hasher

    async def create(
        self, *, tenant: str, scopes: tuple[Scope, ...], name: str = "", expires_in_s: float | None = None
    ) -> NewKey:
        """A new key for ``tenant`` (created when new); its secret is in the result and nowhere else."""
        key_id, secret = secrets.token_hex(8), secrets.token_hex(24)
        async with transaction(self._sessionmaker) as session:
            await session.execute(pg_insert(TenantRow).values(id=tenant, name=tenant).on_conflict_do_nothing())
            now = await session.scalar(select(func.now()))
            assert now is not None
            row = ApiKeyRow(
                id=key_id,
                tenant_id=tenant,
                name=name,
                scopes=sorted(set(scopes)),
                secret_hash=self._hasher.digest(key_id, secret),
                expires_at=None if expires_in_s is None else now + dt.timedelta(seconds=expires_in_s),
            )
            session.add(row)
            await session.flush()
            await session.refresh(row)
            view = _view(row, now)
        return NewKey(key=f"iq_{key_id}_{secret}", view=view)

    async def rotate(self, key_id: str, *, grace_s: float, tenant: str | None = None) -> NewKey:
        """A new key like ``key_id`` (tenant, scopes, name); the old one keeps working for ``grace_s``."""
        async with transaction(self._sessionmaker) as session:
            old = await self._row(session, key_id, tenant, lock=True)
            if old.revoked_at is not None:
                raise Conflict(f"API key {key_id} is revoked: make a new key instead", key=key_id)
            now = await session.scalar(select(func.now()))
            assert now is not None
            ends = now + dt.timedelta(seconds=grace_s)
            if old.expires_at is None or old.expires_at > ends:
                old.expires_at = ends
            scopes, name, owner = tuple(old.scopes), old.name, old.tenant_id
        return await self.create(tenant=owner, scopes=scopes, name=name)  # type: ignore[arg-type]

    async def revoke(self, key_id: str, *, tenant: str | None = None) -> KeyView:
        """Revoke now (effective everywhere within the API's key cache time); idempotent."""
        async with transaction(self._sessionmaker) as session:
            row = await self._row(session, key_id, tenant, lock=True)
            now = await session.scalar(select(func.now()))
            assert now is not None
            if row.revoked_at is None:
                row.revoked_at = now
            return _view(row, now)

    async def list(self, *, tenant: str | None = None) -> list[KeyView]:
        """Keys (never their secrets), newest first; one tenant's, or every key."""
        stmt = select(ApiKeyRow, func.now()).order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.id)
        if tenant is not None:
            stmt = stmt.where(ApiKeyRow.tenant_id == tenant)
        async with statement(self._sessionmaker) as session:
            return [_view(row, now) for row, now in (await session.execute(stmt)).all()]

    async def lookup(self, key_id: str) -> KeyRecord | None:
        """The key ``key_id`` with its tenant's limits (one round trip), or None."""
        stmt = (
            select(ApiKeyRow, TenantRow.limits)
            .join(TenantRow, TenantRow.id == ApiKeyRow.tenant_id)
            .where(ApiKeyRow.id == key_id)
        )
        async with statement(self._sessionmaker) as session:
            found = (await session.execute(stmt)).first()
        if found is None:
            return None
        row, limits = found
        return KeyRecord(
            id=row.id,
            tenant=row.tenant_id,
            scopes=frozenset(row.scopes),
            secret_hash=row.secret_hash,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            limits=msgspec.convert(limits or {}, TenantLimits),
        )

    async def set_limits(self, tenant: str, limits: TenantLimits) -> TenantLimits:
        """Replace ``tenant``'s limits (created when new); what is unset falls back to the server's."""
        values = msgspec.to_builtins(limits)
        async with transaction(self._sessionmaker) as session:
            stmt = pg_insert(TenantRow).values(id=tenant, name=tenant, limits=values)
            await session.execute(stmt.on_conflict_do_update(index_elements=[TenantRow.id], set_={"limits": values}))
        return limits

    async def limits(self, tenant: str) -> TenantLimits:
        async with statement(self._sessionmaker) as session:
            found = await session.scalar(select(TenantRow.limits).where(TenantRow.id == tenant))
        if found is None:
            raise NotFound(f"no tenant {tenant!r}", tenant=tenant)
        return msgspec.convert(found, TenantLimits)

    async def _row(self, session: AsyncSession, key_id: str, tenant: str | None, *, lock: bool) -> ApiKeyRow:
        stmt = select(ApiKeyRow).where(ApiKeyRow.id == key_id)
        if tenant is not None:  # a tenant's admin sees its own keys; another tenant's key is a 404
            stmt = stmt.where(ApiKeyRow.tenant_id == tenant)
        row = await session.scalar(stmt.with_for_update() if lock else stmt)
        if row is None:
            raise KeyNotFound(f"no API key {key_id[:32]!r}", key=key_id[:32])
        return row


def _view(row: ApiKeyRow, now: dt.datetime) -> KeyView:
    active = row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
    return KeyView(
        id=row.id,
        tenant=row.tenant_id,
        name=row.name,
        scopes=tuple(row.scopes),  # type: ignore[arg-type]
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        active=active,
    )
