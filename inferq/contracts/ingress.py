"""What direct producers XADD to ``{prefix}:ingress:{producer}`` (field ``m``, msgpack).

Producers send the same input forms as HTTP callers (records, rows or named tensors, as msgpack
values) or raw ``tensors``. The request id is ``{producer}:{ingress entry id}``, so re-forwarding an
entry after a crash is idempotent. Results arrive on ``{prefix}:reply:{producer}`` (field ``m``, an
``InferResult``), read by the producer with its own consumer group.
"""

from __future__ import annotations

from typing import Any

import msgspec

from inferq.contracts.messages import OutputForm
from inferq.contracts.predictions import Tensor


class IngressRequest(msgspec.Struct, frozen=True, kw_only=True, tag="ingress.v1", tag_field="kind"):
    """One prediction request from a direct producer."""

    model: str
    inputs: Any = None
    tensors: tuple[Tensor, ...] = ()
    ttl_ms: int | None = None
    output: OutputForm = "predictions"
    output_names: tuple[str, ...] = ()
    priority: int = 0
    correlation_id: str = ""


ingress_decoder = msgspec.msgpack.Decoder(IngressRequest)
