"""``GET /v1/models`` and ``GET /v1/models/{model}``: versions, signatures, aliases, readiness."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath

from inferq.api.directory import ModelDirectory
from inferq.api.guards import guard
from inferq.api.routes.openapi import GUARDED, problems
from inferq.contracts.http import ModelList, ModelView


@get(
    "/v1/models",
    summary="Every model with its versions, aliases and readiness",
    tags=["models"],
    responses=problems(*GUARDED),
    guards=[guard("predict", "jobs", "admin")],
)
async def list_models(models: NamedDependency[ModelDirectory]) -> ModelList:
    return await models.list_models()


@get(
    "/v1/models/{model:str}",
    summary="One model: versions, signatures, aliases, readiness",
    tags=["models"],
    responses=problems(*GUARDED, 400, 404, texts={404: "No such model (model_not_found)"}),
    guards=[guard("predict", "jobs", "admin")],
)
async def get_model(model: FromPath[str], models: NamedDependency[ModelDirectory]) -> ModelView:
    return await models.get_model(model)
