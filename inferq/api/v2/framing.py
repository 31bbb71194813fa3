"""The binary tensor data extension's framing: a JSON header, then raw tensors; compressed request bodies.

Request: with ``Inference-Header-Content-Length: N`` the first N bytes are the JSON object and the
rest is the inputs' binary data. Response: outputs asked for in binary follow the JSON header the
same way, and the header length is sent back in the same header.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inferq.contracts.predictions import Tensor
from inferq.contracts.v2 import DATATYPES, InferResponse, ResponseOutput, json_encoder
from inferq.errors import MalformedRequest
from inferq.inputs import decode_tensors
from inferq.inputs.v2_binary import encode_binary

HEADER_LENGTH = "Inference-Header-Content-Length"
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True, slots=True)
class Framed:
    """A response body, and the length of its JSON header when binary tensors follow it (else ``None``)."""

    content: bytes
    header_length: int | None = None


def split_request(
    body: bytes, *, header_length: str | None, encoding: str | None, max_bytes: int
) -> tuple[bytes, memoryview | None]:
    """The JSON header and the binary data after it (``None`` without ``Inference-Header-Content-Length``)."""
    body = _decompressed(body, encoding, max_bytes=max_bytes)
    if header_length is None:
        return body, None
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise MalformedRequest(
            f"{HEADER_LENGTH} must be the JSON header's length in bytes, got {header_length[:40]!r}",
            header=HEADER_LENGTH,
        )
    length = int(text)
    if not 0 < length <= len(body):
        raise MalformedRequest(f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes", header=HEADER_LENGTH)
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def frame_response(
    *,
    model: str,
    version: int,
    request_id: str,
    tensors: Sequence[Tensor],
    binary: Mapping[str, bool],
    default_binary: bool = False,
) -> Framed:
    """The infer response for ``tensors``: each output as JSON ``data``, or binary after the header when
    ``binary`` (by output name, else ``default_binary``) says so."""
    outputs: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for tensor in tensors:
        datatype = DATATYPES[tensor.dtype]
        if binary.get(tensor.name, default_binary):
            raw = encode_binary(tensor)
            blobs.append(raw)
            sized = {"binary_data_size": len(raw)}
            outputs.append(ResponseOutput(name=tensor.name, datatype=datatype, shape=tensor.shape, parameters=sized))
            continue
        (array,) = decode_tensors((tensor,)).values()
        values = array.ravel().tolist()
        outputs.append(ResponseOutput(name=tensor.name, datatype=datatype, shape=tensor.shape, data=values))
    response = InferResponse(model_name=model, model_version=str(version), id=request_id, outputs=tuple(outputs))
    header = json_encoder.encode(response)
    if not blobs:
        return Framed(header)
    return Framed(b"".join((header, *blobs)), header_length=len(header))


def _decompressed(body: bytes, encoding: str | None, *, max_bytes: int) -> bytes:
    """``Content-Encoding: gzip | deflate`` bodies (tritonclient's request compression), at most ``max_bytes``."""
    kind = (encoding or "").strip().lower()
    if kind in ("", "identity"):
        return body
    wbits = _WBITS.get(kind)
    if wbits is None:
        raise MalformedRequest(f"Content-Encoding {kind!r} is not supported: send gzip, deflate or none")
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"the {kind} body cannot be decompressed: {exc}") from None
    if len(plain) > max_bytes:
        raise MalformedRequest(f"the body is over {max_bytes:,} bytes once decompressed")
    if not inflater.eof:
        raise MalformedRequest(f"the {kind} body is truncated")
    return plain
