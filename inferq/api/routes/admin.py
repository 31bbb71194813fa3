"""``/v1/admin``: API keys and tenants' limits over HTTP (the ``admin`` scope; platform-wide)."""

from __future__ import annotations

from typing import Annotated

from litestar import delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from inferq.api.guards import guard
from inferq.api.routes.openapi import GUARDED, problems
from inferq.contracts.auth import KeyRequest, KeyView, NewKey, TenantLimits
from inferq.store.keys import KeyStore

_ADMIN = [guard("admin")]
_TAGS = ["admin"]
_STORED = {422: "A value Postgres cannot store, such as a NUL character (invalid_input)"}
_KEY = problems(*GUARDED, 400, 404, 422, texts={404: "No such key (key_not_found)", **_STORED})
_CREATED = problems(*GUARDED, 400, 413, 422, texts=_STORED)
_ROTATE = problems(
    *GUARDED,
    400,
    404,
    409,
    422,
    texts={404: "No such key (key_not_found)", 409: "The key is revoked (conflict)", **_STORED},
)
_TENANT = problems(*GUARDED, 400, 404, 413, 422, texts={404: "No such tenant (not_found)", **_STORED})


@post("/v1/admin/keys", status_code=201, guards=_ADMIN, tags=_TAGS, responses=_CREATED,
      summary="Make an API key for a tenant (created when new); its secret is in this response only")  # fmt: skip
async def create_key(data: JSONBody[KeyRequest], keys: NamedDependency[KeyStore]) -> NewKey:
    return await keys.create(
        tenant=data.tenant, scopes=tuple(data.scopes), name=data.name, expires_in_s=data.expires_in_s
    )


@get("/v1/admin/keys", guards=_ADMIN, tags=_TAGS, summary="API keys, newest first (never their secrets)",
     responses=problems(*GUARDED, 400, 422, texts=_STORED))  # fmt: skip
async def list_keys(keys: NamedDependency[KeyStore], tenant: FromQuery[str | None] = None) -> list[KeyView]:
    return await keys.list(tenant=tenant)


@delete("/v1/admin/keys/{key_id:str}", status_code=200, guards=_ADMIN, tags=_TAGS, responses=_KEY,
        summary="Revoke a key (refused by every API process within INFERQ_KEY_CACHE_S)")  # fmt: skip
async def revoke_key(key_id: FromPath[str], keys: NamedDependency[KeyStore]) -> KeyView:
    return await keys.revoke(key_id)


@post("/v1/admin/keys/{key_id:str}/rotate", status_code=201, guards=_ADMIN, tags=_TAGS, responses=_ROTATE,
      summary="A new key like this one; the old one keeps working for grace_s (default a day)")  # fmt: skip
async def rotate_key(
    key_id: FromPath[str],
    keys: NamedDependency[KeyStore],
    # NOTE: QueryParameter, not msgspec.Meta: Litestar neither enforces nor documents Meta on a query value.
    grace_s: Annotated[float, QueryParameter(ge=0, le=90 * 86400)] = 86400.0,
) -> NewKey:
    return await keys.rotate(key_id, grace_s=grace_s)


@get("/v1/admin/tenants/{tenant:str}/limits", guards=_ADMIN, tags=_TAGS, responses=_TENANT,
     summary="A tenant's limits (unset = the server's defaults)")  # fmt: skip
async def get_limits(tenant: FromPath[str], keys: NamedDependency[KeyStore]) -> TenantLimits:
    return await keys.limits(tenant)


@put("/v1/admin/tenants/{tenant:str}/limits", guards=_ADMIN, tags=_TAGS, responses=_TENANT,
     summary="Replace a tenant's limits, each applied per API key (unset = the server's defaults)")  # fmt: skip
async def set_limits(
    tenant: FromPath[str], data: JSONBody[TenantLimits], keys: NamedDependency[KeyStore]
) -> TenantLimits:
    await keys.limits(tenant)  # an unknown tenant is a 404 here, not created by a typo
    return await keys.set_limits(tenant, data)


ADMIN_HANDLERS = [create_key, list_keys, revoke_key, rotate_key, get_limits, set_limits]
