"""OpenAPI for the infer body, which the handler reads raw (JSON, or JSON + binary tensors).

Litestar documents a request body only for a parsed ``data`` parameter; this operation class adds
the JSON schema msgspec makes for ``InferBody`` (references inlined) and the binary form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from inferq.contracts.v2 import InferBody

_EXAMPLE = {
    "id": "42",
    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}],
    "outputs": [{"name": "label"}, {"name": "probabilities"}],
}
_BINARY = (
    "Binary tensor data extension: the header `Inference-Header-Content-Length: N` says the first N bytes are "
    "the JSON object; each input with `parameters.binary_data_size: K` takes the next K bytes (little-endian, "
    "row-major; BYTES elements as a 4-byte little-endian length, then the bytes)."
)


def inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A msgspec JSON schema with every ``#/$defs/…`` reference replaced by its definition."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


@dataclass
class InferOperation(Operation):
    """The infer operation, with its request body described."""

    def __post_init__(self) -> None:
        body = cast(Schema, inline(msgspec.json.schema(InferBody)))  # NOTE: a plain dict renders as-is
        self.request_body = RequestBody(
            required=True,
            description=_BINARY,
            content={
                "application/json": OpenAPIMediaType(schema=body, example=_EXAMPLE),
                "application/octet-stream": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                ),
            },
        )
