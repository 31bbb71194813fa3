"""V2 inference on the queue path: read the body, check it against the signature, enqueue, hold, answer.

Without ``Prefer: respond-async`` a call is held, never answered 202 (stock clients read a 202 as an
error): until its deadline — ``parameters.timeout`` µs, at most the wait (``Prefer: wait=N`` or the
default) — and past it, while a worker runs the request, until the wait runs out; no result → 504.
The deadline never outlives the hold, so work that nobody waits for any more is never started.
With ``respond-async``: 202 + ``Location: /v2/predictions/{id}``, which answers like the sync call once done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from inferq.api.headers import CallLimits, Hold
from inferq.api.routing import route_headers
from inferq.api.service import Answer, PredictCall, PredictionService, result_error
from inferq.api.v2.framing import Framed, frame_response, split_request
from inferq.api.v2.request import Options, decode_body, read_options, requested_outputs
from inferq.contracts.auth import Principal
from inferq.contracts.models import ModelRef
from inferq.contracts.v2 import Accepted, json_encoder
from inferq.errors import DeadlineExceeded, NotFound, ServiceUnavailable
from inferq.inputs.v2 import v2_feeds

_EXPIRED = "the deadline (parameters.timeout, at most the wait) passed before the inference could start"


@dataclass(frozen=True, slots=True)
class InferCall:
    """One infer request as the HTTP layer read it: the raw body and the headers that shape it."""

    ref: ModelRef
    body: bytes
    header_length: str | None = None
    content_encoding: str | None = None
    prefer: str | None = None
    correlation_id: str = ""
    principal: Principal | None = None  # set by the route (its guard authenticated the caller)
    routing_key: str | None = None  # X-Routing-Key: the same key gets the same version of an alias


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer: 200 (the response) or 202 (accepted), the body, and extra headers."""

    status: int
    body: Framed
    headers: dict[str, str] = field(default_factory=dict)


class V2Inference:
    """``POST …/infer`` and ``GET /v2/predictions/{id}``, without HTTP."""

    def __init__(
        self, *, predictions: PredictionService, limits: CallLimits, max_elements: int, max_body_bytes: int
    ) -> None:
        self._predictions = predictions
        self._limits = limits
        self._max_elements = max_elements
        self._max_body_bytes = max_body_bytes

    async def infer(self, call: InferCall) -> Outcome:
        """Validate everything before enqueueing; raises domain errors for every rejection and for 504."""
        header, binary = split_request(
            call.body, header_length=call.header_length, encoding=call.content_encoding, max_bytes=self._max_body_bytes
        )
        body = decode_body(header, framed=binary is not None)
        options = read_options(body.parameters, deadline_max_s=self._limits.deadline_max_s)
        hold = self._limits.hold(call.prefer)
        route = await self._predictions.route(call.ref, routing_key=call.routing_key)
        version = route.version
        names, binary_outputs = requested_outputs(body.outputs, version.signature)
        feeds = v2_feeds(body.inputs, binary, version.signature, max_elements=self._max_elements)
        try:
            answer = await self._predictions.predict(self._call(call, feeds, options, hold, names), route=route)
        except DeadlineExceeded as exc:
            raise DeadlineExceeded(_EXPIRED, **exc.details) from None
        headers = {"Preference-Applied": hold.applied} if hold.applied else {}
        if answer.cached:  # the result cache (api/result_cache.py), as on v1: answered at once, even respond-async
            headers = {"X-Cache": "hit", **({} if hold.applied == "respond-async" else headers)}
        headers.update(route_headers(answer.route or route))  # X-Model-Version, Deprecation, X-Model-Fallback
        if answer.result is None:
            return self._unanswered(answer, hold, headers)
        framed = frame_response(
            model=answer.model,
            version=answer.version,
            request_id=body.id or answer.request_id,
            tensors=answer.result.tensors,
            binary=binary_outputs,
            default_binary=options.binary_output,
        )
        return Outcome(200, framed, headers)

    async def poll(self, request_id: str, *, tenant: str) -> Outcome:
        """A ``respond-async`` request: 202 while queued or running, then its response (JSON outputs)."""
        tracked = await self._predictions.get_prediction(request_id, tenant=tenant)
        result = tracked.result
        if result is None:
            if tracked.status == "expired":
                raise DeadlineExceeded(_EXPIRED, id=request_id)
            status: Literal["queued", "running"] = "running" if tracked.status == "running" else "queued"
            accepted = Accepted(
                id=request_id, status=status, model_name=tracked.model, model_version=str(tracked.version)
            )
            return Outcome(202, Framed(json_encoder.encode(accepted)), {"Location": f"/v2/predictions/{request_id}"})
        if result.status == "expired":
            raise DeadlineExceeded(_EXPIRED, id=request_id)
        if result.status != "succeeded":
            raise result_error(result)
        if not result.tensors:
            raise NotFound(f"prediction {request_id!r} was made with /v1: read it at /v1/predictions/{request_id}")
        framed = frame_response(
            model=result.model, version=result.version, request_id=request_id, tensors=result.tensors, binary={}
        )
        return Outcome(200, framed)

    def _call(
        self, call: InferCall, feeds: dict[str, np.ndarray], options: Options, hold: Hold, names: tuple[str, ...]
    ) -> PredictCall:
        respond_async = hold.applied == "respond-async"
        ttl_ms = options.ttl_ms or self._limits.ttl_ms(None)
        wait_s = running_wait_s = 0.0
        if not respond_async:
            ttl_ms = min(ttl_ms, max(1, math.ceil(hold.wait_s * 1000)))
            wait_s = ttl_ms / 1000
            running_wait_s = max(0.0, hold.wait_s - wait_s)
        assert call.principal is not None, "an infer call is authenticated before it gets here"
        return PredictCall(
            ref=call.ref,
            inputs=feeds,
            wait_s=wait_s,
            ttl_ms=ttl_ms,
            correlation_id=call.correlation_id,
            principal=call.principal,
            output="tensors",
            output_names=names,
            priority=options.priority,
            placehold=respond_async,
            running_wait_s=running_wait_s,
        )

    def _unanswered(self, answer: Answer, hold: Hold, headers: dict[str, str]) -> Outcome:
        if hold.applied == "respond-async":
            headers["Location"] = f"/v2/predictions/{answer.request_id}"
            accepted = Accepted(
                id=answer.request_id, status="queued", model_name=answer.model, model_version=str(answer.version)
            )
            return Outcome(202, Framed(json_encoder.encode(accepted)), headers)
        if self._predictions.draining:
            raise ServiceUnavailable(
                f"this API process is shutting down; request {answer.request_id} was enqueued and may still run",
                retry_after_s=1,
            )
        raise DeadlineExceeded(
            f"no result within {hold.wait_s:g}s: the inference did not start before its deadline "
            f"or did not finish in time (request {answer.request_id})",
            id=answer.request_id,
        )
