"""Who is calling: API keys, their scopes, and the limits of the tenant they belong to.

A key reads ``iq_<id>_<secret>``: ``id`` (16 hex) names the key and is stored as is; the secret (48 hex,
192 bits) is shown once and stored only as HMAC-SHA256 under the server's pepper.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

import msgspec

Scope = Literal["predict", "jobs", "admin"]
SCOPES: tuple[Scope, ...] = ("predict", "jobs", "admin")
KEY_PATTERN = re.compile(r"^iq_([0-9a-f]{16})_([0-9a-f]{48})$")
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class TenantLimits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A tenant's limits, each applied per API key; ``None`` = the server's default (settings)."""

    rate_per_s: Annotated[float, msgspec.Meta(gt=0)] | None = None  # sustained requests per second
    burst: Annotated[int, msgspec.Meta(ge=1)] | None = None  # requests allowed at once above the rate
    concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None  # predictions in flight at a time
    max_rows: Annotated[int, msgspec.Meta(ge=1)] | None = None  # rows per prediction request
    max_elements: Annotated[int, msgspec.Meta(ge=1)] | None = None  # values per prediction request


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits in force for one caller: the tenant's, else the server's defaults."""

    rate_per_s: float
    burst: int
    concurrency: int
    max_rows: int
    max_elements: int

    def overridden(self, tenant: TenantLimits) -> Limits:
        changes = {f: v for f in tenant.__struct_fields__ if (v := getattr(tenant, f)) is not None}
        return msgspec.structs.replace(self, **changes)


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller: its key, its tenant, what it may do, and within which limits."""

    key_id: str
    tenant: str
    scopes: frozenset[Scope]
    limits: Limits

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


class KeyView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An API key as listed (never its secret)."""

    id: str
    tenant: str
    name: str
    scopes: tuple[Scope, ...]
    created_at: dt.datetime
    active: bool  # not revoked, not expired (always written: a missing field must not read as false)
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


class NewKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key just made: the only time its secret is shown."""

    key: str
    view: KeyView


class KeyRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/admin/keys``: a key for a tenant (created if new)."""

    tenant: Annotated[str, msgspec.Meta(pattern=TENANT_PATTERN)]
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)]  # a list: see WebhookSpec.events
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    expires_in_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
