"""Dead-lettered stream entries as the CLI and the admin API show them."""

from __future__ import annotations

import msgspec

from inferq.contracts.messages import InferRequest, Lane


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of a partition's dead-letter stream.

    ``id`` is the DLQ entry id; ``origin_id`` the work-stream entry it came from. The request
    fields are empty when the message could not be decoded (``reason`` says so). ``request`` (the
    whole message, tensors included) is filled by ``inspect`` only.
    """

    id: str
    partition: str
    origin_id: str
    lane: Lane
    reason: str
    deliveries: int
    dead_lettered_ms: int
    request_id: str | None = None
    tenant: str | None = None
    rows: int | None = None
    correlation_id: str | None = None
    request: InferRequest | None = None


class Replayed(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter put back on its lane: the DLQ id it had and the new work-stream entry id."""

    id: str
    lane: Lane
    entry_id: str
    request_id: str | None = None
