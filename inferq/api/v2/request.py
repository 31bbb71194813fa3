"""The infer request's JSON header read and checked: the body, its ``parameters``, the requested outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from inferq.contracts.models import ModelSignature
from inferq.contracts.v2 import InferBody, Parameters, RequestOutput, infer_body_decoder
from inferq.errors import InvalidInput, MalformedRequest

_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


@dataclass(frozen=True, slots=True)
class Options:
    """Request ``parameters``: the deadline (``timeout`` µs → ms), ``priority``, ``binary_data_output``."""

    ttl_ms: int | None
    priority: int
    binary_output: bool


def read_options(parameters: Parameters, *, deadline_max_s: float) -> Options:
    """``parameters`` checked; unknown keys are left alone (the protocol allows any), sequences refused."""
    ttl_ms = None
    timeout = parameters.get("timeout")
    if timeout is not None:
        limit_us = round(deadline_max_s * 1_000_000)
        if not _is_int(timeout) or not 0 < int(timeout) <= limit_us:
            raise InvalidInput(
                f"parameters.timeout must be a whole number of microseconds from 1 to {limit_us}, got {timeout!r}",
                field="parameters.timeout",
            )
        ttl_ms = max(1, math.ceil(int(timeout) / 1000))
    priority = parameters.get("priority", 0)
    if not _is_int(priority) or int(priority) < 0:
        raise InvalidInput(
            f"parameters.priority must be a non-negative integer, got {priority!r}", field="parameters.priority"
        )
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInput("parameters.binary_data_output must be true or false", field="parameters")
    if parameters.get("sequence_id") not in (None, 0, ""):
        raise InvalidInput("sequence batching (parameters.sequence_id) is not supported", field="parameters")
    return Options(ttl_ms=ttl_ms, priority=int(priority), binary_output=binary_output)


def decode_body(header: bytes, *, framed: bool) -> InferBody:
    """The JSON header as an ``InferBody``; ``MalformedRequest`` (400) when it is not one.

    ``framed``: the request had ``Inference-Header-Content-Length`` (else bytes after the JSON get a hint).
    """
    try:
        return infer_body_decoder.decode(header)
    except msgspec.ValidationError as exc:
        raise MalformedRequest(f"invalid infer request: {exc}") from None
    except msgspec.DecodeError as exc:
        hint = ""
        if not framed and "trailing characters" in str(exc):
            hint = "; binary data after the JSON needs the Inference-Header-Content-Length header"
        raise MalformedRequest(f"the infer request is not valid JSON: {exc}{hint}") from None
    except UnicodeDecodeError:  # msgspec raises this, not DecodeError, for bad UTF-8 inside a string
        raise MalformedRequest("the infer request is not valid JSON: a string is not UTF-8") from None


def requested_outputs(
    outputs: tuple[RequestOutput, ...] | None, signature: ModelSignature
) -> tuple[tuple[str, ...], dict[str, bool]]:
    """The requested output names, in order (``()`` = all), and each one's explicit ``binary_data``."""
    if not outputs:
        return (), {}
    known = [spec.name for spec in signature.outputs]
    names: list[str] = []
    binary: dict[str, bool] = {}
    for output in outputs:
        name, parameters = output.name, output.parameters
        if name not in known:
            raise InvalidInput(f"unknown output {name!r}; this model's outputs are: {', '.join(known)}", field=name)
        if name in names:
            raise InvalidInput(f"output {name!r} is requested twice", field=name)
        if "classification" in parameters:
            raise InvalidInput(
                f"output {name!r}: the classification extension is not supported; request the probabilities output",
                field=name,
            )
        if any(key in parameters for key in _SHARED_MEMORY):
            raise InvalidInput(f"output {name!r}: shared memory is not supported", field=name)
        flag = parameters.get("binary_data")
        if flag is not None:
            if not isinstance(flag, bool):
                raise InvalidInput(f"output {name!r}: binary_data must be true or false", field=name)
            binary[name] = flag
        names.append(name)
    return tuple(names), binary


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
