"""``POST /v1/models/{model}[/versions/{version}]/predict`` and ``GET /v1/predictions/{id}``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Response

from inferq.api.access import correlation_id
from inferq.api.guards import guard, principal_of
from inferq.api.routing import Route, route_headers, routing_key
from inferq.api.service import Answer, PredictCall, PredictionService, Tracked
from inferq.contracts.http import Fallback, PredictBody, PredictionResponse, Problem, ResponseTimings
from inferq.contracts.messages import InferResult
from inferq.contracts.models import ModelRef
from inferq.errors import InvalidInput, ModelNotFound, VersionNotFound

_PROBLEMS = {
    status: ResponseSpec(data_container=Problem, description=text, media_type="application/problem+json")
    for status, text in (
        (400, "Malformed body or header (malformed_request)"),
        (401, "Missing, malformed, unknown, revoked or expired API key (unauthenticated)"),
        (403, "The API key lacks the 'predict' scope (forbidden)"),
        (404, "Unknown model, version or alias"),
        (413, "Body too large (payload_too_large)"),
        (422, "Inputs do not fit the model's signature, or exceed the key's row/element caps (invalid_input)"),
        (429, "The API key's rate or in-flight quota is spent (rate_limited); see Retry-After, RateLimit-*"),
        (503, "Partition full (overloaded) or Redis unavailable (service_unavailable); see Retry-After"),
        (504, "The deadline passed before the prediction started (deadline_exceeded)"),
    )
}
_PREDICT_RESPONSES: dict[int, ResponseSpec] = {
    202: ResponseSpec(data_container=PredictionResponse, description="Accepted: poll the Location"),
    **_PROBLEMS,
}
_PREDICT_DOC = (
    "Inputs are records (`[{feature: value}]`), rows (`[[v, ...]]`) or named tensors (`{name: nested list}`). "
    "`Prefer: wait=N` holds the call up to N seconds (capped); a result in time is a 200, otherwise a 202 "
    "with `Location: /v1/predictions/{id}`. `Cancel-After: S` is the deadline after which the work never starts."
)


@post(
    "/v1/models/{model:str}/predict",
    status_code=200,
    summary="Predict with a model (name, name@version or name@alias)",
    description=_PREDICT_DOC,
    responses=_PREDICT_RESPONSES,
    tags=["predictions"],
    guards=[guard("predict", counted=False)],  # the quota is spent in the admission script
)
async def predict(
    model: FromPath[str],
    data: JSONBody[PredictBody],
    request: Request[Any, Any, Any],
    predictions: NamedDependency[PredictionService],
) -> Response[PredictionResponse]:
    return await _predict(request, predictions, ref=model_ref(model), data=data)


@post(
    "/v1/models/{model:str}/versions/{version:str}/predict",
    status_code=200,
    summary="Predict with one version of a model",
    description=_PREDICT_DOC,
    responses=_PREDICT_RESPONSES,
    tags=["predictions"],
    guards=[guard("predict", counted=False)],
)
async def predict_version(
    model: FromPath[str],
    version: FromPath[str],
    data: JSONBody[PredictBody],
    request: Request[Any, Any, Any],
    predictions: NamedDependency[PredictionService],
) -> Response[PredictionResponse]:
    if "@" in model:
        raise ModelNotFound(f"model {model!r} not found: name the version in the path only", model=model)
    name = model_ref(model).name
    if not version.isdecimal() or int(version) < 1:
        raise VersionNotFound(f"model {name!r} has no version {version!r}", model=name, version=version)
    return await _predict(request, predictions, ref=ModelRef(name=name, version=int(version)), data=data)


@get(
    "/v1/predictions/{prediction_id:str}",
    summary="A prediction's state and, once finished, its result",
    responses={status: _PROBLEMS[status] for status in (401, 403, 404, 429, 503)},
    tags=["predictions"],
    guards=[guard("predict")],
)
async def get_prediction(
    prediction_id: FromPath[str], request: Request[Any, Any, Any], predictions: NamedDependency[PredictionService]
) -> PredictionResponse:
    tenant = principal_of(request.scope).tenant  # another tenant's id is a 404
    return _tracked_body(await predictions.get_prediction(prediction_id, tenant=tenant))


async def _predict(
    request: Request[Any, Any, Any], service: PredictionService, *, ref: ModelRef, data: PredictBody
) -> Response[PredictionResponse]:
    # NOTE: one dependency per handler: Litestar resolves two or more in an anyio task group per request.
    prefer, cancel_after, key = read_headers(request.scope["headers"])
    hold = service.limits.hold(prefer)
    ttl_ms = service.limits.ttl_ms(cancel_after)
    call = PredictCall(
        ref=ref,
        inputs=data.inputs,
        wait_s=hold.wait_s,
        ttl_ms=ttl_ms,
        correlation_id=correlation_id(request.scope),
        principal=principal_of(request.scope),
        routing_key=key,
    )
    status, body, headers = answer_response(await service.predict(call), applied=hold.applied)
    return Response(body, status_code=status, headers=headers)


def answer_response(answer: Answer, *, applied: str | None) -> tuple[int, PredictionResponse, dict[str, str]]:
    """Status, body and headers for a finished call: 200 with the result, or 202 pointing at it."""
    headers = route_headers(answer.route) if answer.route else {"X-Model-Version": str(answer.version)}
    if applied and not (answer.cached and applied == "respond-async"):  # a cache hit is answered at once
        headers["Preference-Applied"] = applied
    if answer.result is None:
        headers["Location"] = f"/v1/predictions/{answer.request_id}"
        body = PredictionResponse(
            id=answer.request_id,
            status="queued",
            model=answer.model,
            version=answer.version,
            fallback=_fallback(answer.route),
        )
        return 202, body, headers
    if answer.cached:
        headers["X-Cache"] = "hit"
    return 200, _answer_body(answer, answer.result), headers


def read_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None, str | None]:
    """``Prefer`` (repeated ones joined), ``Cancel-After`` and ``X-Routing-Key``, straight from the ASGI headers."""
    prefer: list[str] = []
    cancel_after: str | None = None
    key: str | None = None
    for name, value in raw:
        if name == b"prefer":
            prefer.append(value.decode("latin-1"))
        elif name == b"cancel-after":
            cancel_after = value.decode("latin-1")
        elif name == b"x-routing-key":
            key = value.decode("latin-1")
    return (", ".join(prefer) or None), cancel_after, routing_key(key)


def model_ref(text: str) -> ModelRef:
    try:
        return ModelRef.parse(text)
    except InvalidInput as exc:
        raise ModelNotFound(f"model {text!r} not found: {exc.message}", model=text) from None


def _answer_body(answer: Answer, result: InferResult) -> PredictionResponse:
    return PredictionResponse(
        id=answer.request_id,
        status=result.status,
        model=answer.model,
        version=answer.version,
        predictions=result.predictions,
        timings=_timings(result, total_ms=answer.total_ms),
        fallback=_fallback(answer.route),
        cached=answer.cached,
    )


def _fallback(route: Route | None) -> Fallback | None:
    if route is None or route.reason is None:
        return None
    return Fallback(from_version=route.fallback_from, reason=route.reason)


def _tracked_body(tracked: Tracked) -> PredictionResponse:
    result = tracked.result
    if result is None:
        return PredictionResponse(
            id=tracked.request_id, status=tracked.status, model=tracked.model, version=tracked.version
        )
    return PredictionResponse(
        id=tracked.request_id,
        status=result.status,
        model=result.model,
        version=result.version,
        predictions=result.predictions,
        error=result.error,
        timings=_timings(result, total_ms=None),
    )


def _timings(result: InferResult, *, total_ms: float | None) -> ResponseTimings | None:
    t = result.timings
    if t is None:
        return None
    total = total_ms if total_ms is not None else round(t.queue_ms + t.inference_ms, 3)
    # NOTE: queue_ms comes from millisecond stream-entry ids on Redis's clock, total_ms from this
    # process's clock: within a millisecond, queue time can read longer than the whole call.
    queue = min(t.queue_ms, max(0.0, total - t.inference_ms))
    return ResponseTimings(queue_ms=queue, inference_ms=t.inference_ms, total_ms=total, batch_rows=t.batch_rows)
