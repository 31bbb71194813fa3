"""The queue of ``inferq tasks``: arq jobs on ``{prefix}:tasks``, msgpack-encoded, deduplicated by job id.

The API and the stream workers schedule webhook attempts here after their transaction commits; the
task worker schedules retries and its own reconciler ticks. Postgres holds the durable delivery state,
so a job lost with Redis is found again by the reconciler: this queue only says *when* to look.

NOTE: arq keeps its job keys under its own fixed prefix (``arq:job:<id>``, ``arq:result:<id>``), not
under ``INFERQ_KEY_PREFIX``; job ids carry a delivery id (unique per database) or the prefix.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from inferq.contracts.jobs import EventRecord

DELIVER = "deliver"
RECONCILE = "reconcile"
EXPIRY_MARGIN_S = 86_400.0  # an attempt not started a day after its time is dropped; the reconciler re-schedules it

# arq stores a failed job's exception in its result: unknown objects are kept as their repr, never pickled.
_encoder = msgspec.msgpack.Encoder(enc_hook=repr)
_decoder = msgspec.msgpack.Decoder()


def serialize(value: Any) -> bytes:
    """arq's ``job_serializer``: msgpack (arq's default is pickle, which would run code on load)."""
    return _encoder.encode(value)


def deserialize(data: bytes) -> Any:
    """arq's ``job_deserializer``."""
    return _decoder.decode(data)


def queue_name(prefix: str) -> str:
    """The arq queue (a sorted set) of one deployment."""
    return f"{prefix}:tasks"


def delivery_job(delivery_id: str, attempt: int) -> str:
    """The arq job id of one attempt: enqueueing it twice while it is queued or running is a no-op."""
    return f"{DELIVER}:{delivery_id}:{attempt}"


class TaskQueue:
    """Enqueue ``inferq tasks`` jobs through arq, on the caller's Redis connection pool.

    ``redis`` must return bytes (no ``decode_responses``), as arq expects. ``aclose`` leaves the shared
    pool open.
    """

    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self.prefix = prefix
        self.name = queue_name(prefix)
        self.arq = ArqRedis(
            redis.connection_pool, job_serializer=serialize, job_deserializer=deserialize, default_queue_name=self.name
        )

    async def deliver(self, delivery_id: str, *, attempt: int, defer_s: float = 0.0, replay: bool = False) -> bool:
        """Schedule attempt ``attempt`` (from 1) of a delivery in ``defer_s`` seconds; False if already scheduled.

        ``replay``: a caller's replay, scheduled even when a retry of the same attempt is already waiting
        (whichever runs first makes the attempt; the deliverer skips the other)."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, not {attempt}")
        if defer_s < 0:
            raise ValueError(f"defer_s must not be negative, got {defer_s}")
        job = await self.arq.enqueue_job(
            DELIVER,
            delivery_id,
            attempt=attempt,
            _job_id=delivery_job(delivery_id, attempt) + (f":replay-{secrets.token_hex(4)}" if replay else ""),
            _defer_by=defer_s or None,
            _expires=defer_s + EXPIRY_MARGIN_S,
        )
        return job is not None

    async def schedule(self, delivery_id: str, attempt: int, replay: bool = False) -> None:
        """``deliver`` now, in the ``(delivery_id, attempt)`` callback form ``JobService`` and ``JobSink`` take."""
        await self.deliver(delivery_id, attempt=attempt, replay=replay)

    async def deliver_new(self, events: Iterable[EventRecord]) -> int:
        """Schedule the first attempt of each delivery written with ``events``; how many were new."""
        scheduled = 0
        for record in events:
            if record.delivery_id is not None:
                scheduled += await self.deliver(record.delivery_id, attempt=1)
        return scheduled

    async def known(self, delivery_id: str, attempt: int) -> bool:
        """Whether that attempt is queued, deferred or running in arq right now."""
        return bool(await self.arq.exists(job_key_prefix + delivery_job(delivery_id, attempt)))

    async def reconcile(self, *, slot: int, expires_s: float) -> bool:
        """Enqueue the reconciler pass of time slot ``slot``; every task worker ticks, one pass per slot runs."""
        job = await self.arq.enqueue_job(
            RECONCILE, slot, _job_id=f"{self.prefix}:{RECONCILE}:{slot}", _expires=expires_s
        )
        return job is not None

    async def aclose(self) -> None:
        """Release this wrapper; the connection pool stays with its owner."""
        await self.arq.aclose(close_connection_pool=False)
