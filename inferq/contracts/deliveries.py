"""Webhook deliveries: the work of one attempt, and the delivery log callers can read."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from inferq.contracts.jobs import EventType

DeliveryStatus = Literal["pending", "succeeded", "failed", "disabled"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = ("pending", "succeeded", "failed", "disabled")
EXCERPT_CHARS = 256  # of a response body, kept per attempt


class DeliveryTask(msgspec.Struct, frozen=True, kw_only=True):
    """What the next attempt sends: ``body`` (JSON bytes, the same on every attempt) to ``url``.

    ``event_id`` is the ``webhook-id`` header; ``attempts`` counts the attempts made so far.
    """

    id: str
    event_id: str
    type: EventType
    tenant: str
    job_id: str
    url: str
    status: DeliveryStatus
    attempts: int
    body: bytes


class AttemptView(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt: the HTTP status (``None`` when no response came) or the error, and its duration."""

    n: int
    at: dt.datetime
    status: int | None
    error: str | None
    excerpt: str | None
    duration_ms: float


class DeliveryView(msgspec.Struct, frozen=True, kw_only=True):
    """One event's delivery to one URL, with its attempt history (the delivery log)."""

    id: str
    event_id: str
    type: EventType
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    history: tuple[AttemptView, ...] = ()
