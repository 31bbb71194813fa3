"""Stream messages: msgpack-encoded, tagged and versioned Structs (``kind = "infer.v1"``).

New fields get defaults (old workers skip unknown fields: no ``forbid_unknown_fields`` here);
a breaking change is a new tag. ``docs/streams.md`` documents these shapes for direct producers.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.predictions import Prediction, Tensor

Lane = Literal["interactive", "bulk"]
State = Literal["queued", "running", "succeeded", "failed", "canceled", "expired", "dead_lettered"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "expired", "dead_lettered"})
OutputForm = Literal["predictions", "tensors"]


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """Where a result is announced; set only by trusted code (API instance or ingress forwarder)."""

    kind: Literal["api", "producer"]
    name: str


class JobChunkRef(msgspec.Struct, frozen=True, kw_only=True):
    """Marks a request as one chunk of a batch job: its result goes to Postgres, not to a result key."""

    job_id: str
    seq: int


class InferRequest(msgspec.Struct, frozen=True, kw_only=True, tag="infer.v1", tag_field="kind"):
    """One prediction request on a partition's work stream.

    The deadline is ``ttl_ms`` after the enqueue time, which is the millisecond part of the
    stream entry id (Redis's clock), so hosts with skewed clocks agree.
    """

    id: str
    tenant: str
    model: str
    version: int
    inputs: tuple[Tensor, ...]
    rows: int
    ttl_ms: int
    output: OutputForm = "predictions"
    output_names: tuple[str, ...] = ()
    priority: int = 0
    correlation_id: str = ""
    reply: Reply | None = None
    job: JobChunkRef | None = None
    key_id: str = ""  # the API key it counts against: the worker frees its in-flight slot with the result
    # Model management (issue 6). Set by the API only; the ingress forwarder drops them from direct producers.
    cache_key: str = ""  # a succeeded result is also stored here for ``cache_ttl_ms`` (the result cache)
    cache_ttl_ms: int = 0
    shadow_of: str = ""  # a mirror of that request: run and logged for comparison, never answered
    logged: bool = False  # log this request whatever the sampling (the primary of a mirrored pair)
    fallback_from: int = 0  # resolved to this version because that one could not serve


class Timings(msgspec.Struct, frozen=True, kw_only=True):
    """Where a request's time went, in milliseconds; ``batch_rows`` = rows in its ORT run."""

    queue_ms: float
    inference_ms: float
    batch_rows: int


class InferResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="result.v1", tag_field="kind"):
    """The terminal outcome of one request, stored under its result key and published."""

    id: str
    tenant: str
    model: str
    version: int
    status: State
    predictions: tuple[Prediction, ...] = ()
    tensors: tuple[Tensor, ...] = ()
    error: ErrorInfo | None = None
    timings: Timings | None = None
    correlation_id: str = ""
    key_id: str = ""  # the API key whose in-flight slot the stored result frees (internal; never in a response)


class Pending(msgspec.Struct, frozen=True, kw_only=True, tag="pending.v1", tag_field="kind"):
    """Placeholder stored when a caller was answered 202: the request is known, not finished.

    ``entry_id`` (the work-stream entry) and ``ttl_ms`` let a reader tell queued from running
    (the entry is pending in the group) and from expired (its deadline passed before any start).
    """

    id: str
    tenant: str
    model: str
    version: int
    status: State = "queued"
    entry_id: str = ""
    ttl_ms: int = 0


StreamMessage = InferRequest
StoredResult = InferResult | Pending

message_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(InferRequest)
result_decoder = msgspec.msgpack.Decoder(InferResult)
stored_decoder = msgspec.msgpack.Decoder(StoredResult)
