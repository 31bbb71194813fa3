"""Enqueue with atomic admission: one Lua call checks ``XLEN < limit`` and XADDs, or rejects.

With a caller's :class:`Quota`, the same call also checks and spends its API key's rate and
in-flight quota (``streams.quotas``): admission, quotas and the XADD are one atomic step and one
round trip. Concurrent submissions in one event-loop turn are coalesced into one pipeline: the
client library, not Redis, is the producer's ceiling (research/performance.md).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from inferq.errors import Overloaded, ServiceUnavailable
from inferq.streams.connection import UNAVAILABLE
from inferq.streams.quotas import ADMIT_WITH_QUOTA, Quota

# KEYS[1] stream, KEYS[2] drain-rate key; ARGV[1] limit, ARGV[2] message.
# Returns the entry id, or {backlog, drain rate (rows/s, as written by workers)} on rejection.
ADMIT = """
local backlog = redis.call('XLEN', KEYS[1])
if backlog >= tonumber(ARGV[1]) then
  return {backlog, redis.call('GET', KEYS[2]) or '0'}
end
return redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
"""


@dataclass(frozen=True, slots=True)
class Submission:
    stream: str
    rate_key: str
    limit: int
    message: bytes
    quota: Quota | None = None
    request_id: str = ""  # with a quota: the member of the key's in-flight set
    ttl_ms: int = 0  # with a quota: how long that member counts at most


class Producer:
    """Admission-checked XADD. ``submit`` returns the entry id.

    One pipeline is in flight at a time: the first submission is sent at the next loop turn, and
    submissions arriving while a pipeline is out are coalesced into the next one (no added delay
    at low load, one round trip for many requests at high load).
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._queue: list[tuple[Submission, asyncio.Future[str]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, submission: Submission) -> str:
        """Enqueue one message; ``Overloaded`` (with ``retry_after_s``) when the stream is full."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((submission, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return await future

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._flush(batch)
                except BaseException as exc:  # never leave a caller waiting on a lost pipeline
                    error = exc if isinstance(exc, Exception) else ServiceUnavailable("enqueue was cancelled")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._sender = None
            leftover, self._queue = self._queue, []  # only when cancelled mid-way
            for _, future in leftover:
                if not future.done():
                    future.set_exception(ServiceUnavailable("enqueue was cancelled"))

    async def _flush(self, batch: list[tuple[Submission, asyncio.Future[str]]]) -> None:
        # NOTE: plain EVAL: a registered script in a pipeline costs a SCRIPT EXISTS round trip per
        # flush, and EVALSHA fails with NOSCRIPT after a Redis restart. Redis caches it by hash anyway.
        pipe = self._redis.pipeline(transaction=False)
        for sub, _ in batch:
            if sub.quota is None:
                pipe.eval(ADMIT, 2, sub.stream, sub.rate_key, sub.limit, sub.message)  # type: ignore[arg-type]
            else:
                q = sub.quota
                keys = (sub.stream, sub.rate_key, q.quota_key, q.in_flight_key)
                args = (str(q.interval_ms), str(q.burst), str(q.concurrency), sub.request_id, str(sub.ttl_ms))
                pipe.eval(ADMIT_WITH_QUOTA, 4, *keys, str(sub.limit), sub.message, *args)  # type: ignore[arg-type]
        try:
            replies = await pipe.execute(raise_on_error=False)
        except UNAVAILABLE as exc:
            error = ServiceUnavailable(f"redis is unavailable: {exc}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (sub, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, bytes):
                future.set_result(reply.decode())
            elif isinstance(reply, list):
                future.set_exception(_rejection(sub, reply))
            else:
                future.set_exception(ServiceUnavailable(f"redis refused the enqueue: {reply}"))


def _rejection(sub: Submission, reply: list[object]) -> Exception:
    """What a rejecting admission script returned: ``{backlog, rate}``, or ``{reason, …}`` with a quota."""
    if sub.quota is None:
        return _overloaded(sub, backlog=int(reply[0]), rate=float(reply[1]))  # type: ignore[call-overload, arg-type]
    reason = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    if reason == "rate":
        return sub.quota.rate_limited(float(reply[1]))  # type: ignore[arg-type]
    if reason == "concurrency":
        return sub.quota.saturated(float(reply[1]))  # type: ignore[arg-type]
    return _overloaded(sub, backlog=int(reply[1]), rate=float(reply[2]))  # type: ignore[call-overload, arg-type]


def _overloaded(sub: Submission, *, backlog: int, rate: float) -> Overloaded:
    # Retry-After from the observed drain rate: time for the backlog above the limit to drain.
    retry_after = max(1, math.ceil(backlog / rate)) if rate > 0 else 1
    return Overloaded(
        f"partition is full ({backlog} queued, limit {sub.limit}); retry in {retry_after}s",
        backlog=backlog,
        limit=sub.limit,
        retry_after_s=min(retry_after, 60),
    )


def enqueued_ms(entry_id: str | bytes) -> int:
    """The enqueue time (Redis's clock, ms) encoded in a stream entry id."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])
