"""The AsyncAPI 3.0 document for the streams, generated from the message Structs (msgspec's JSON schema).

``python -m inferq.contracts.asyncapi > docs/asyncapi.json`` regenerates the committed copy; a test
checks that the copy is current.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from inferq.contracts.ingress import IngressRequest
from inferq.contracts.messages import InferRequest, InferResult

_MSGPACK = "application/msgpack"


def build(prefix: str = "inferq") -> dict[str, Any]:
    """The document, with channel addresses under ``prefix``."""
    (ingress, request, result), components = msgspec.json.schema_components(
        [IngressRequest, InferRequest, InferResult], ref_template="#/components/schemas/{name}"
    )
    partition = (
        "The partition parameter is the hash-tagged `{model@version}`, braces included (`inferq:{wine@2}:work`)."
    )
    channels = {
        "ingress": _channel(
            f"{prefix}:ingress:{{producer}}", "IngressRequest", "A producer's requests (XADD, field m)."
        ),
        "producerReplies": _channel(
            f"{prefix}:reply:{{producer}}", "InferResult", "Results for a producer (XREADGROUP with its own group)."
        ),
        "work": _channel(f"{prefix}:{{partition}}:work", "InferRequest", f"Interactive lane (internal). {partition}"),
        "bulk": _channel(
            f"{prefix}:{{partition}}:bulk", "InferRequest", f"Bulk lane: job chunks (internal). {partition}"
        ),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "inferq streams",
            "version": "1",
            "description": "Redis Streams contract of inferq. Every entry has one field, `m`: a msgpack map. "
            "Messages are tagged by `kind` and versioned; new fields get defaults; a breaking change is a new tag.",
        },
        "defaultContentType": _MSGPACK,
        "channels": channels,
        "operations": {
            "produce": {"action": "send", "channel": {"$ref": "#/channels/ingress"}},
            "receiveReplies": {"action": "receive", "channel": {"$ref": "#/channels/producerReplies"}},
        },
        "components": {
            "messages": {
                "IngressRequest": {"payload": ingress, "contentType": _MSGPACK},
                "InferRequest": {"payload": request, "contentType": _MSGPACK},
                "InferResult": {"payload": result, "contentType": _MSGPACK},
            },
            "schemas": components,
        },
    }


def _channel(address: str, message: str, description: str) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
    }


def render(prefix: str = "inferq") -> bytes:
    return msgspec.json.format(msgspec.json.encode(build(prefix)), indent=2) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
