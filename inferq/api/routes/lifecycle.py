"""``/v1/models/{model}/versions/{version}`` and ``/v1/models/{model}/aliases/{alias}``: lifecycle and traffic.

Writes need the ``admin`` scope; reading a version or an alias, any scope that may list models.
"""

from __future__ import annotations

from litestar import Router, delete, get, patch, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody

from inferq.api.guards import guard
from inferq.api.lifecycle import ModelLifecycle
from inferq.api.routes.openapi import GUARDED, problems
from inferq.contracts.http import AliasBody, AliasView, VersionPatch, VersionView

_ADMIN = [guard("admin")]
_READ = [guard("predict", "jobs", "admin")]
_TAGS = ["models"]
_ADMIN_TAGS = ["models", "admin"]
_VERSION = "/v1/models/{model:str}/versions/{version:int}"
_ALIAS = "/v1/models/{model:str}/aliases/{alias:str}"
_NO_VERSION = {404: "No such model or version, or a deleted one (model_not_found, version_not_found)"}
_NO_ALIAS = {404: "No such model or alias (model_not_found, alias_not_found)"}
_ROUTED = {409: "Aliases still send the version traffic, weights or shadow (conflict); the aliases are named"}
_BAD_PATCH = {422: "An invalid status or override, or a value Postgres cannot store (invalid_input)"}
_BAD_TRAFFIC = {
    422: "Weights not summing to 100; an unknown, archived or deleted version; a shadow share outside 1-100, "
    "already weighted, or taking other inputs than a weighted version (invalid_input)"
}
_GET_VERSION = problems(*GUARDED, 400, 404, texts=_NO_VERSION)
_PATCH_VERSION = problems(*GUARDED, 400, 404, 409, 413, 422, texts={**_NO_VERSION, **_ROUTED, **_BAD_PATCH})
_DELETE_VERSION = problems(*GUARDED, 400, 404, 409, texts={**_NO_VERSION, **_ROUTED})
_GET_ALIAS = problems(*GUARDED, 400, 404, texts=_NO_ALIAS)
_PUT_ALIAS = problems(*GUARDED, 400, 404, 413, 422, texts={404: "No such model (model_not_found)", **_BAD_TRAFFIC})
_DELETE_ALIAS = problems(*GUARDED, 400, 404, 409, texts={**_NO_ALIAS, 409: "The default alias (conflict)"})
_PATCH_DOC = (
    "`archived`: no new traffic, artifacts kept; `deprecated`: still served, with a `Deprecation` header. "
    "`overrides` replaces the version's serving overrides whole; `description: null` clears it."
)
_PUT_DOC = (
    '`{"version": 3}` pins; `{"weights": {"2": 95, "3": 5}}` splits (percentages summing to 100). '
    '`"shadow": {"version": 4, "share": 10}` mirrors 10% of requests to version 4 (logged, never answered), '
    "`null` ends it; left out, `fallback` and `shadow` stay as they were. The weights replaced become `previous`."
)
Lifecycle = NamedDependency[ModelLifecycle]


@get(_VERSION, guards=_READ, tags=_TAGS, responses=_GET_VERSION,
     summary="One version: status, signature, overrides, readiness")  # fmt: skip
async def get_version(model: FromPath[str], version: FromPath[int], lifecycle: Lifecycle) -> VersionView:
    return await lifecycle.get_version(model, version)


@patch(_VERSION, guards=_ADMIN, tags=_ADMIN_TAGS, responses=_PATCH_VERSION, description=_PATCH_DOC,
       summary="Change a version's status, description or serving overrides")  # fmt: skip
async def update_version(
    model: FromPath[str], version: FromPath[int], data: JSONBody[VersionPatch], lifecycle: Lifecycle
) -> VersionView:
    return await lifecycle.update_version(model, version, data)


@delete(_VERSION, status_code=204, guards=_ADMIN, tags=_ADMIN_TAGS, responses=_DELETE_VERSION,
        summary="Soft-delete a version: archived and hidden; its artifact kept, its number never reused")  # fmt: skip
async def delete_version(model: FromPath[str], version: FromPath[int], lifecycle: Lifecycle) -> None:
    await lifecycle.delete_version(model, version)


@get(_ALIAS, guards=_READ, tags=_TAGS, responses=_GET_ALIAS,
     summary="One alias: weights, fallback, shadow, and the weights before its last change")  # fmt: skip
async def get_alias(model: FromPath[str], alias: FromPath[str], lifecycle: Lifecycle) -> AliasView:
    return await lifecycle.get_alias(model, alias)


@put(_ALIAS, guards=_ADMIN, tags=_ADMIN_TAGS, responses=_PUT_ALIAS, description=_PUT_DOC,
     summary="Point an alias at a version, or split its traffic by weights")  # fmt: skip
async def put_alias(
    model: FromPath[str], alias: FromPath[str], data: JSONBody[AliasBody], lifecycle: Lifecycle
) -> AliasView:
    return await lifecycle.put_alias(model, alias, data)


@delete(_ALIAS, status_code=204, guards=_ADMIN, tags=_ADMIN_TAGS, responses=_DELETE_ALIAS,
        summary="Delete an alias (never `default`)")  # fmt: skip
async def delete_alias(model: FromPath[str], alias: FromPath[str], lifecycle: Lifecycle) -> None:
    await lifecycle.delete_alias(model, alias)


def _lifecycle(state: State) -> ModelLifecycle:
    services = state.get("services")
    if services is None:
        raise RuntimeError("the API's services are not open (outside the app's lifespan)")
    lifecycle: ModelLifecycle = services.lifecycle
    return lifecycle


LIFECYCLE_ROUTER = Router(
    path="/",
    route_handlers=[get_version, update_version, delete_version, get_alias, put_alias, delete_alias],
    dependencies={"lifecycle": Provide(_lifecycle, sync_to_thread=False)},
)
