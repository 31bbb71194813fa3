"""OpenAPI documentation for the routes: error responses, public routes, and the bodies handlers read raw.

Documentation only: what a route answers is decided by the guards, the handlers and ``api/problems.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Encoding, OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody, Schema

from inferq.api.v2.schema import inline
from inferq.contracts.http import Problem
from inferq.contracts.jobs import JobCreateBody

# NOTE: ``security=[]`` renders as no entry at all, so the route inherits the document's key requirement;
# an empty requirement object is OpenAPI's "no credentials needed".
PUBLIC: list[dict[str, list[str]]] = [{}]

# What every route behind a guard may answer before its handler runs: no or a bad key, a key without the
# scope, a spent rate quota (or, for unknown keys, this address's lookups), Postgres down for the key lookup.
GUARDED = (401, 403, 429, 503)

_TEXTS = {
    400: "Malformed body, header or parameter (malformed_request)",
    401: "Missing, malformed, unknown, revoked or expired API key (unauthenticated); see WWW-Authenticate",
    403: "The API key lacks the scope this route needs (forbidden)",
    404: "Not found (or another tenant's)",
    409: "Conflicts with the resource's state",
    413: "Body too large (payload_too_large)",
    422: "Invalid input (invalid_input)",
    429: "The API key's rate quota is spent, or too many unknown keys from this address (rate_limited); "
    "see Retry-After",
    503: "Postgres or Redis unavailable, or the API starting or stopping (service_unavailable); see Retry-After",
}


def problems(*statuses: int, texts: Mapping[int, str] | None = None) -> dict[int, ResponseSpec]:
    """Problem-details responses (``application/problem+json``) for ``statuses``; ``texts`` override descriptions."""
    texts = texts or {}
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=texts.get(status) or _TEXTS[status],
            media_type="application/problem+json",
            generate_examples=False,
        )
        for status in statuses
    }


@dataclass
class JobSubmitOperation(Operation):
    """``POST /v1/jobs``: its handler reads the body raw, so the two body forms are described here."""

    def __post_init__(self) -> None:
        form = {
            "type": "object",
            "required": ["model", "file"],
            "properties": {
                "model": {"type": "string", "description": "name, name@version or name@alias"},
                "webhook": {"type": "string", "contentMediaType": "application/json", "description": "WebhookSpec"},
                "completion_window": {"type": "string", "description": "e.g. 24h"},
                "metadata": {"type": "string", "contentMediaType": "application/json", "description": "{label: text}"},
                "file": {"type": "string", "format": "binary", "description": "JSONL (one input per line) or CSV"},
            },
        }
        # NOTE: plain dicts render as they are (the JSON schema msgspec makes, references inlined)
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(schema=cast(Schema, inline(msgspec.json.schema(JobCreateBody)))),
                "multipart/form-data": OpenAPIMediaType(
                    schema=cast(Schema, form),
                    encoding={"file": Encoding(content_type="application/jsonl, text/csv")},
                ),
            },
        )


@dataclass
class JobEventsOperation(Operation):
    """``GET /v1/jobs/{id}/events``: a stream of Server-Sent Events, each carrying the job as JSON."""

    def __post_init__(self) -> None:
        # NOTE: JobView is a component already (the other job routes return it)
        event = {
            "type": "object",
            "required": ["event", "id", "data"],
            "properties": {
                "event": {"const": "job"},
                "id": {"type": "string", "description": "the job's status"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/JobView"},
                },
            },
        }
        assert self.responses is not None
        self.responses["200"] = OpenAPIResponse(
            description="`event: job` with the job (JobView) as `data` now and at every change, until it is terminal",
            content={"text/event-stream": OpenAPIMediaType(schema=cast(Schema, event))},
        )
