"""Open Inference Protocol (KServe V2) HTTP bodies: infer requests (strict), responses, metadata, errors.

Datatypes map one to one onto the signature dtypes; ``-1`` is a dynamic dimension in metadata.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from inferq.contracts.models import DType

DATATYPES: dict[DType, str] = {
    "float32": "FP32",
    "float64": "FP64",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
    "string": "BYTES",
}
DTYPES: dict[str, DType] = {datatype: dtype for dtype, datatype in DATATYPES.items()}
# The rest of the protocol's datatypes: known, but no model input here takes them.
OTHER_DATATYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "FP16", "BF16"})
PLATFORM = "onnxruntime_onnx"

Parameters = dict[str, str | int | float | bool]


class RequestInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One input tensor: ``data`` (flat or nested, row-major) or ``parameters.binary_data_size``."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: Any = None
    parameters: Parameters = {}


class RequestOutput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One requested output; ``parameters.binary_data`` asks for it in binary."""

    name: str
    parameters: Parameters = {}


class InferBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v2/models/{m}[/versions/{v}]/infer``: the JSON object (the header, with binary data).

    ``parameters``: ``timeout`` (µs, the deadline), ``priority`` (0 = default, 1 = highest),
    ``binary_data_output``. ``model_name``/``model_version`` are accepted and ignored: the path names
    the model (Triton's own examples send them).
    """

    inputs: tuple[RequestInput, ...]
    id: str | None = None
    parameters: Parameters = {}
    outputs: tuple[RequestOutput, ...] | None = None
    model_name: str | None = None
    model_version: str | None = None


class ResponseOutput(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One output tensor: flat ``data``, or ``parameters.binary_data_size`` bytes after the JSON."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: dict[str, int] | None = None
    data: list[Any] | None = None


class InferResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The answer to an infer request; ``id`` echoes the request's, else the server-made one."""

    model_name: str
    model_version: str
    id: str
    outputs: tuple[ResponseOutput, ...]


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """``Prefer: respond-async``: the request is queued; poll ``Location`` for its outputs."""

    id: str
    status: Literal["queued", "running"]
    model_name: str
    model_version: str


class TensorMetadata(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    datatype: str
    shape: tuple[int, ...]


class ModelMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """A model as the protocol describes it: the inputs and outputs of the version the path names."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


class ServerMetadata(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    extensions: tuple[str, ...]


class Liveness(msgspec.Struct, frozen=True, kw_only=True):
    live: bool


class Readiness(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Server or model readiness; ``error`` says why not (the status is 400 then)."""

    ready: bool
    name: str | None = None
    error: str | None = None


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every V2 error: a non-200 status with ``{"error": "..."}``."""

    error: str


infer_body_decoder = msgspec.json.Decoder(InferBody)
json_encoder = msgspec.json.Encoder()
