"""``POST /v1/models/{model}/versions``: upload an ONNX file as the model's next version (admin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from litestar import Request, post
from litestar.di import NamedDependency
from litestar.openapi.spec import Encoding, OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import FromPath
from litestar.response import Response

from inferq.api.directory import version_view
from inferq.api.guards import guard
from inferq.api.model_uploads import ModelUploads
from inferq.api.routes.openapi import GUARDED, problems
from inferq.contracts.http import VersionView

_DOC = (
    "`multipart/form-data`: the optional fields `description`, `feature_names` and `class_names` (JSON arrays "
    "of strings, written into the stored model's metadata), `overrides` (a JSON object of serving overrides), "
    "then the `file` part: ONNX only (pickle and joblib files are refused by their content; convert them "
    "locally with `inferq models import`). The file is validated in a child process with memory, CPU and time "
    "limits, then registered as the next version, `active`; a new model's first version gets the `default` "
    "alias, and no other alias moves."
)
_TEXTS = {
    400: "Not a multipart form, no `file` part, an unknown or undecodable field (malformed_request)",
    413: "The file is over INFERQ_MAX_MODEL_BYTES (payload_too_large)",
    422: "Not an acceptable ONNX model, with the reason (invalid_model); a bad name or overrides (invalid_input)",
    500: "The validator itself failed (internal_error)",
    503: "Every upload slot busy (overloaded), the validator timed out, or Postgres down; see Retry-After",
}


@dataclass
class UploadOperation(Operation):
    """The handler reads the body raw, so the form is described here."""

    def __post_init__(self) -> None:
        names = {"type": "string", "contentMediaType": "application/json", "description": 'e.g. ["a", "b"]'}
        form = {
            "type": "object",
            "required": ["file"],
            "properties": {
                "description": {"type": "string"},
                "feature_names": {**names, "description": "JSON array: one name per input column"},
                "class_names": {**names, "description": "JSON array: one name per class, in class order"},
                "overrides": {"type": "string", "contentMediaType": "application/json", "description": "{name: n}"},
                "file": {"type": "string", "format": "binary", "description": "the ONNX model"},
            },
        }
        self.request_body = RequestBody(
            required=True,
            content={
                "multipart/form-data": OpenAPIMediaType(
                    schema=cast(Schema, form), encoding={"file": Encoding(content_type="application/octet-stream")}
                )
            },
        )


@post("/v1/models/{model:str}/versions", guards=[guard("admin")], status_code=201, tags=["models"],
      summary="Upload an ONNX model as the next version", description=_DOC, request_max_body_size=None,
      responses=problems(*GUARDED, 400, 413, 422, 500, texts=_TEXTS), operation_class=UploadOperation)  # fmt: skip
async def upload_version(
    request: Request[Any, Any, Any], model: FromPath[str], uploads: NamedDependency[ModelUploads]
) -> Response[VersionView]:
    version = await uploads.upload(
        model,
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
        body=request.stream(),
        gone=lambda: _disconnected(request),
    )
    headers = {"Location": f"/v1/models/{version.model}/versions/{version.version}"}
    return Response(version_view(version, ready=False), status_code=201, headers=headers)  # no worker has it yet


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    """Returns when the client goes away (read after the whole body: the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


VERSION_HANDLERS = [upload_version]
