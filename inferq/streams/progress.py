"""Where an accepted request stands while it has only a placeholder: queued, running or expired."""

from __future__ import annotations

import redis.asyncio as aioredis

from inferq.contracts.messages import InferResult, Pending, State
from inferq.streams.partition import Partition
from inferq.streams.producer import enqueued_ms
from inferq.streams.results import decode_stored


async def pending_status(
    redis: aioredis.Redis, part: Partition, *, key: str, pending: Pending
) -> tuple[State, InferResult | None]:
    """The state of a placeheld request, read in one round trip.

    Running = its entry is delivered and unacknowledged in the partition's group; expired = its
    deadline (enqueue time from the entry id, on Redis's clock, plus ``ttl_ms``) passed before any
    worker took it. The result key is read again after the group, so a request that finished in
    between is reported finished, never queued.
    """
    if not pending.entry_id:
        return pending.status, None
    pipe = redis.pipeline(transaction=False)
    pipe.xpending_range(part.work, part.group, min=pending.entry_id, max=pending.entry_id, count=1)
    pipe.get(key)
    pipe.time()
    delivered, value, now = await pipe.execute(raise_on_error=False)
    if isinstance(value, bytes):
        stored = decode_stored(value)
        if isinstance(stored, InferResult):
            return stored.status, stored
    if isinstance(delivered, list) and delivered:  # not a NOGROUP error: no worker yet
        return "running", None
    if isinstance(now, tuple | list) and pending.ttl_ms > 0:
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        if now_ms > enqueued_ms(pending.entry_id) + pending.ttl_ms:
            return "expired", None
    return pending.status, None
