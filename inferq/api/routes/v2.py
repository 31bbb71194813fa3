"""The Open Inference Protocol (KServe V2) under ``/v2``: health, metadata, readiness, infer; ``{"error"}`` bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import Request, Router, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.response import Response

from inferq.api.access import correlation_id
from inferq.api.guards import guard, principal_of
from inferq.api.routes.openapi import PUBLIC
from inferq.api.routing import routing_key
from inferq.api.v2 import errors
from inferq.api.v2.framing import HEADER_LENGTH
from inferq.api.v2.inference import InferCall, Outcome, V2Inference
from inferq.api.v2.metadata import V2Metadata, model_ref
from inferq.api.v2.schema import InferOperation
from inferq.contracts.v2 import Accepted, ErrorBody, InferResponse, Liveness, ModelMetadata, Readiness, ServerMetadata

_ERRORS = {
    status: ResponseSpec(data_container=ErrorBody, description=text, media_type="application/json")
    for status, text in (
        (400, "Bad input: body, datatype, shape, names, binary sizes, parameters"),
        (401, "Missing, malformed, unknown, revoked or expired API key"),
        (403, "The API key lacks the 'predict' scope"),
        (404, "Unknown model, version or alias"),
        (413, "Body too large"),
        (429, "The API key's rate or in-flight quota is spent; see Retry-After"),
        (503, "Partition full or Redis unavailable; see Retry-After"),
        (504, "No result before the deadline (parameters.timeout) or the wait"),
    )
}
_GUARDED = {status: _ERRORS[status] for status in (400, 401, 403, 404, 429, 503)}
_READY = {
    200: ResponseSpec(data_container=Readiness, description="Ready"),
    400: ResponseSpec(data_container=Readiness, description="Not ready (`error` says why)"),
}
_INFER_RESPONSES = {
    200: ResponseSpec(
        data_container=InferResponse,
        description=f"JSON, or (binary outputs) `application/octet-stream`: `{HEADER_LENGTH}` bytes of JSON, "
        "then each binary output's `binary_data_size` bytes",
    ),
    202: ResponseSpec(data_container=Accepted, description="`Prefer: respond-async`: poll the Location"),
    **_ERRORS,
}
_INFER_DOC = (
    "Held until the result, or the deadline (`parameters.timeout` µs, at most the wait) — 504 when none "
    "came; `Prefer: respond-async` answers 202 + `Location` at once. Binary tensor data extension supported."
)


@get("/", summary="Server metadata", sync_to_thread=False, security=PUBLIC)
def server_metadata(v2_metadata: NamedDependency[V2Metadata]) -> ServerMetadata:
    return v2_metadata.server()


@get("/health/live", summary="The server is live", sync_to_thread=False, security=PUBLIC)
def server_live() -> Liveness:
    return Liveness(live=True)


@get("/health/ready", summary="Redis and Postgres answer (400 when not)", responses=_READY, security=PUBLIC)
async def server_ready(v2_metadata: NamedDependency[V2Metadata]) -> Response[Readiness]:
    return _readiness(await v2_metadata.server_ready())


@get("/models/{model:str}", summary="Model metadata", responses=_GUARDED, guards=[guard("predict")])
async def model_metadata(model: FromPath[str], v2_metadata: NamedDependency[V2Metadata]) -> ModelMetadata:
    return await v2_metadata.model(model_ref(model))


@get(
    "/models/{model:str}/versions/{version:str}",
    summary="Model version metadata",
    responses=_GUARDED,
    guards=[guard("predict")],
)
async def version_metadata(
    model: FromPath[str], version: FromPath[str], v2_metadata: NamedDependency[V2Metadata]
) -> ModelMetadata:
    return await v2_metadata.model(model_ref(model, version))


@get(
    "/models/{model:str}/ready",
    summary="A worker consumes the model",
    responses={**_GUARDED, **_READY},
    guards=[guard("predict")],
)
async def model_ready(model: FromPath[str], v2_metadata: NamedDependency[V2Metadata]) -> Response[Readiness]:
    return _readiness(await v2_metadata.model_ready(model_ref(model)))


@get(
    "/models/{model:str}/versions/{version:str}/ready",
    summary="A worker consumes the model version",
    responses={**_GUARDED, **_READY},
    guards=[guard("predict")],
)
async def version_ready(
    model: FromPath[str], version: FromPath[str], v2_metadata: NamedDependency[V2Metadata]
) -> Response[Readiness]:
    return _readiness(await v2_metadata.model_ready(model_ref(model, version)))


@post(
    "/models/{model:str}/infer",
    status_code=200,
    summary="Infer (name, name@version or name@alias)",
    description=_INFER_DOC,
    responses=_INFER_RESPONSES,
    operation_class=InferOperation,
    guards=[guard("predict", counted=False)],  # the quota is spent in the admission script
)
async def infer(
    model: FromPath[str], request: Request[Any, Any, Any], v2_inference: NamedDependency[V2Inference]
) -> Response[bytes]:
    return await _infer(request, v2_inference, model=model, version=None)


@post(
    "/models/{model:str}/versions/{version:str}/infer",
    status_code=200,
    summary="Infer with one version",
    description=_INFER_DOC,
    responses=_INFER_RESPONSES,
    operation_class=InferOperation,
    guards=[guard("predict", counted=False)],  # the quota is spent in the admission script
)
async def infer_version(
    model: FromPath[str],
    version: FromPath[str],
    request: Request[Any, Any, Any],
    v2_inference: NamedDependency[V2Inference],
) -> Response[bytes]:
    return await _infer(request, v2_inference, model=model, version=version)


@get(
    "/predictions/{prediction_id:str}",
    summary="A respond-async request: 202 while queued or running, then its infer response",
    responses={status: _INFER_RESPONSES[status] for status in (200, 202, 401, 403, 404, 429, 503, 504)},
    guards=[guard("predict")],
)
async def poll(
    prediction_id: FromPath[str], request: Request[Any, Any, Any], v2_inference: NamedDependency[V2Inference]
) -> Response[bytes]:
    return _response(await v2_inference.poll(prediction_id, tenant=principal_of(request.scope).tenant))


async def _infer(
    request: Request[Any, Any, Any], service: V2Inference, *, model: str, version: str | None
) -> Response[bytes]:
    ref = model_ref(model, version)
    header_length, encoding, prefer, key = _headers(request.scope["headers"])
    call = InferCall(
        ref=ref,
        body=await request.body(),
        header_length=header_length,
        content_encoding=encoding,
        prefer=prefer,
        correlation_id=correlation_id(request.scope),
        principal=principal_of(request.scope),
        routing_key=key,
    )
    return _response(await service.infer(call))


def _response(outcome: Outcome) -> Response[bytes]:
    headers = dict(outcome.headers)
    media_type = "application/json"
    if outcome.body.header_length is not None:
        headers[HEADER_LENGTH] = str(outcome.body.header_length)
        media_type = "application/octet-stream"
    return Response(outcome.body.content, status_code=outcome.status, media_type=media_type, headers=headers)


def _readiness(readiness: Readiness) -> Response[Readiness]:
    return Response(readiness, status_code=200 if readiness.ready else 400)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None, str | None, str | None]:
    """``Inference-Header-Content-Length``, ``Content-Encoding``, ``Prefer`` (joined) and ``X-Routing-Key``."""
    header_length: str | None = None
    encoding: str | None = None
    prefer: list[str] = []
    key: str | None = None
    for name, value in raw:
        if name == b"inference-header-content-length":
            header_length = value.decode("latin-1")
        elif name == b"content-encoding":
            encoding = value.decode("latin-1")
        elif name == b"prefer":
            prefer.append(value.decode("latin-1"))
        elif name == b"x-routing-key":
            key = value.decode("latin-1")
    return header_length, encoding, ", ".join(prefer) or None, routing_key(key)


V2_ROUTER = Router(
    path="/v2",
    route_handlers=[
        server_metadata,
        server_live,
        server_ready,
        model_metadata,
        version_metadata,
        model_ready,
        version_ready,
        infer,
        infer_version,
        poll,
    ],
    exception_handlers=errors.HANDLERS,
    tags=["v2"],
)
