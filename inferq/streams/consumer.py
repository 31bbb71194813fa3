"""Consumer primitives over a partition's two lanes: group setup, read, ack, claim, dead-letter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from inferq.contracts.messages import Lane
from inferq.streams.partition import Partition

LANES: tuple[Lane, ...] = ("interactive", "bulk")


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as delivered to this consumer."""

    lane: Lane
    id: str
    message: bytes
    deliveries: int = 1


def is_nogroup(exc: BaseException) -> bool:
    """True for the error Redis gives when the stream or group vanished (restart without data), also
    when redis-py wrapped it as a pipeline's failed command ("Command # 1 (...) caused error: NOGROUP")."""
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


async def ensure_groups(redis: aioredis.Redis, part: Partition) -> None:
    """Create the partition's group on both lanes (from the start: a backlog is read too)."""
    for stream in (part.work, part.bulk):
        try:
            await redis.xgroup_create(stream, part.group, id="0", mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise


async def read(
    redis: aioredis.Redis, part: Partition, *, consumer: str, count: int, block_ms: int | None, bulk: int | None = None
) -> list[Entry]:
    """New entries, interactive first: up to ``count`` interactive ones and up to ``bulk`` job chunks
    (``None``: ``count``; 0: none), in one round trip.

    A blocking read (``block_ms``) waits on both lanes in one XREADGROUP (``count`` per lane). A
    non-blocking one (``block_ms=None``; 0 would be "forever" to Redis) reads each lane with its own count.
    """
    bulk = count if bulk is None else bulk
    if block_ms:
        streams: dict[Any, Any] = {part.work: ">", part.bulk: ">"} if bulk else {part.work: ">"}
        reply = await redis.xreadgroup(part.group, consumer, streams, count=max(count, 1), block=block_ms)
        return read_reply(part, reply)
    pipe = redis.pipeline(transaction=False)
    queued = queue_read(pipe, part, consumer=consumer, count=count, bulk=bulk)
    return read_replies(part, (await pipe.execute())[-queued:] if queued else [])


def queue_read(pipe: Pipeline, part: Partition, *, consumer: str, count: int, bulk: int) -> int:
    """Queue a non-blocking read of up to ``count`` interactive entries and ``bulk`` chunks on ``pipe``
    (e.g. behind a batch's acks: one round trip for both); how many replies it adds (for ``read_replies``)."""
    queued = 0
    for stream, n in ((part.work, count), (part.bulk, bulk)):
        if n > 0:
            pipe.xreadgroup(part.group, consumer, {stream: ">"}, count=n)
            queued += 1
    return queued


def read_replies(part: Partition, replies: list[Any]) -> list[Entry]:
    """The entries of several XREADGROUP replies (``queue_read``'s), interactive first."""
    return read_reply(part, [stream for reply in replies for stream in (reply or [])])


def read_reply(part: Partition, reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply over one or both lanes, interactive first."""
    entries: list[Entry] = []
    for stream, items in sorted(reply or [], key=lambda s: _as_str(s[0]) != part.work):
        lane = part.lane_of(_as_str(stream))
        for entry_id, fields in items:
            if fields is None:  # deleted while pending
                continue
            entries.append(Entry(lane=lane, id=_as_str(entry_id), message=fields.get(b"m", b"")))
    return entries


def ack(pipe: Pipeline, part: Partition, entries: list[Entry]) -> None:
    """Queue XACK + XDEL per lane: a stream's length stays exactly its unfinished work."""
    for lane in LANES:
        ids = [e.id for e in entries if e.lane == lane]
        if ids:
            stream = part.stream(lane)
            pipe.xack(stream, part.group, *ids)
            pipe.xdel(stream, *ids)


def dead_letter(pipe: Pipeline, part: Partition, entry: Entry, *, reason: str, max_len: int = 100_000) -> None:
    """Queue: copy the entry to the partition's DLQ with a reason, then ack and delete it."""
    fields = {
        "m": entry.message,
        "reason": reason,
        "origin_id": entry.id,
        "lane": entry.lane,
        "deliveries": str(entry.deliveries),
    }
    pipe.xadd(part.dlq, fields, maxlen=max_len, approximate=True)  # type: ignore[arg-type]
    ack(pipe, part, [entry])


async def claim(
    redis: aioredis.Redis, part: Partition, *, lane: Lane, consumer: str, min_idle_ms: int,
    start: str = "0-0", count: int = 16,
) -> tuple[str, list[Entry]]:  # fmt: skip
    """XAUTOCLAIM entries idle longer than ``min_idle_ms`` (a dead consumer's), with delivery counts.

    Returns the cursor for the next call (``"0-0"`` when a sweep is complete) and the entries.
    """
    stream = part.stream(lane)
    cursor, claimed, *_ = await redis.xautoclaim(stream, part.group, consumer, min_idle_ms, start, count=count)
    if not claimed:
        return _as_str(cursor), []
    # NOTE: one exact XPENDING per id (one round trip): a single range from the first to the last
    # claimed id also holds other consumers' entries, and a count cap would drop some of ours.
    pipe = redis.pipeline(transaction=False)
    for entry_id, _ in claimed:
        pipe.xpending_range(stream, part.group, min=entry_id, max=entry_id, count=1)
    counts = {_as_str(p["message_id"]): int(p["times_delivered"]) for rows in await pipe.execute() for p in rows}
    entries = [
        Entry(
            lane=lane,
            id=_as_str(entry_id),
            message=fields.get(b"m", b""),
            deliveries=counts.get(_as_str(entry_id), 1),
        )
        for entry_id, fields in claimed
        if fields is not None
    ]
    return _as_str(cursor), entries


async def heartbeat(redis: aioredis.Redis, part: Partition, *, consumer: str, entries: list[Entry]) -> None:
    """Reset the idle time of entries still being worked on, so the reclaimer leaves them alone."""
    pipe = redis.pipeline(transaction=False)
    for lane in LANES:
        ids: list[Any] = [e.id for e in entries if e.lane == lane]
        if ids:
            pipe.xclaim(part.stream(lane), part.group, consumer, 0, ids, justid=True)
    if len(pipe):
        await pipe.execute()


def release(pipe: Pipeline, part: Partition, *, consumer: str, entries: list[Entry]) -> None:
    """Queue: leave entries pending for a later run, as if this delivery had not happened (its count
    set back, its idle time reset) — for a failure that is not the message's fault (Postgres down while
    storing a job chunk's results), so that it never walks the entry towards the dead-letter stream."""
    for entry in entries:
        stream = part.stream(entry.lane)
        pipe.xclaim(stream, part.group, consumer, 0, [entry.id], retrycount=max(0, entry.deliveries - 1), justid=True)


async def remove_idle_consumers(redis: aioredis.Redis, part: Partition, *, idle_ms: int, keep: str) -> int:
    """Delete consumers with nothing pending that have been idle for ``idle_ms`` (dead workers)."""
    removed = 0
    for stream in (part.work, part.bulk):
        try:
            consumers = await redis.xinfo_consumers(stream, part.group)
        except ResponseError:
            continue
        for info in consumers:
            name = _as_str(info["name"])
            if name != keep and int(info["pending"]) == 0 and int(info["idle"]) > idle_ms:
                await redis.xgroup_delconsumer(stream, part.group, name)
                removed += 1
    return removed


def _as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
