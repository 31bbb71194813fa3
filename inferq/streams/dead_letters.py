"""A partition's dead-letter stream: list, inspect, replay onto the original lane, purge.

Workers write dead letters (``consumer.dead_letter``); these are the operator's side of them,
shared by ``inferq dlq`` and the admin API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from inferq.contracts.dead_letters import DeadLetter, Replayed
from inferq.contracts.messages import InferRequest, Lane, Pending, message_encoder, request_decoder
from inferq.contracts.names import Names
from inferq.streams.partition import Partition
from inferq.streams.producer import enqueued_ms
from inferq.streams.results import PENDING, RESULT, decode_stored

_PAGE = 500
Fields = dict[bytes, bytes]


async def list_dead_letters(redis: aioredis.Redis, part: Partition, *, count: int = 1000) -> list[DeadLetter]:
    """The oldest ``count`` dead letters, without their tensors."""
    entries = await redis.xrange(part.dlq, count=count)
    return [_dead_letter(part, entry_id, fields, full=False) for entry_id, fields in entries]


async def inspect(redis: aioredis.Redis, part: Partition, ids: Sequence[str] = ()) -> list[DeadLetter]:
    """Dead letters with their whole request; ``ids`` empty = all. Unknown ids are skipped."""
    return [_dead_letter(part, entry_id, fields, full=True) for entry_id, fields in await _entries(redis, part, ids)]


async def replay(redis: aioredis.Redis, part: Partition, *, names: Names, ids: Sequence[str] = ()) -> list[Replayed]:
    """XADD each dead letter's original message to its lane and delete it from the DLQ (one MULTI).

    ``ids`` empty = all. A replayed request gets a fresh deadline (its TTL counts from the new entry
    id), and bypasses admission: this is an operator's decision. Its ``dead_lettered`` result, if
    still stored, becomes a ``queued`` placeholder so the new run's result can be stored.
    """
    entries = await _entries(redis, part, ids)
    if not entries:
        return []
    requests = [_decode(fields.get(b"m", b"")) for _, fields in entries]
    await _reopen_results(redis, names, [r for r in requests if r is not None])
    pipe = redis.pipeline(transaction=True)
    lanes: list[Lane] = []
    for entry_id, fields in entries:
        lane = _lane(fields)
        lanes.append(lane)
        pipe.xadd(part.stream(lane), {"m": fields.get(b"m", b"")})
        pipe.xdel(part.dlq, entry_id)
    replies = await pipe.execute()
    return [
        Replayed(id=_text(entry_id), lane=lane, entry_id=_text(new_id), request_id=request.id if request else None)
        for (entry_id, _), lane, request, new_id in zip(entries, lanes, requests, replies[::2], strict=True)
    ]


async def purge(redis: aioredis.Redis, part: Partition, *, ids: Sequence[str] = ()) -> int:
    """Delete the given dead letters (``ids`` empty = the whole DLQ); how many were deleted."""
    if ids:
        return int(await redis.xdel(part.dlq, *ids))
    pipe = redis.pipeline(transaction=True)
    pipe.xlen(part.dlq)
    pipe.delete(part.dlq)
    count, _ = await pipe.execute()
    return int(count)


async def _entries(redis: aioredis.Redis, part: Partition, ids: Sequence[str]) -> list[tuple[Any, Fields]]:
    if ids:
        pipe = redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(part.dlq, min=entry_id, max=entry_id, count=1)
        return [entry for found in await pipe.execute() for entry in found]
    entries: list[tuple[Any, Fields]] = []
    start = "-"
    while True:
        page = await redis.xrange(part.dlq, min=start, count=_PAGE)
        entries.extend(page)
        if len(page) < _PAGE:
            return entries
        start = "(" + _text(page[-1][0])


async def _reopen_results(redis: aioredis.Redis, names: Names, requests: Sequence[InferRequest]) -> None:
    keys = [names.result(r.id) for r in requests]
    values = await redis.mget(keys) if keys else []
    pipe = redis.pipeline(transaction=False)
    for request, key, value in zip(requests, keys, values, strict=True):
        if value is None or not value.startswith(RESULT):
            continue
        stored = decode_stored(value)
        if stored.status == "dead_lettered":
            pending = Pending(id=request.id, tenant=request.tenant, model=request.model, version=request.version)
            pipe.set(key, PENDING + message_encoder.encode(pending), keepttl=True)
    if len(pipe):
        await pipe.execute()


def _dead_letter(part: Partition, entry_id: Any, fields: Fields, *, full: bool) -> DeadLetter:
    entry = _text(entry_id)
    request = _decode(fields.get(b"m", b""))
    return DeadLetter(
        id=entry,
        partition=part.key,
        origin_id=_text(fields.get(b"origin_id", b"")),
        lane=_lane(fields),
        reason=_text(fields.get(b"reason", b"")),
        deliveries=int(fields.get(b"deliveries", b"0") or 0),
        dead_lettered_ms=enqueued_ms(entry),
        request_id=request.id if request else None,
        tenant=request.tenant if request else None,
        rows=request.rows if request else None,
        correlation_id=request.correlation_id if request else None,
        request=request if full else None,
    )


def _decode(message: bytes) -> InferRequest | None:
    try:
        request: InferRequest = request_decoder.decode(message)
        return request
    except msgspec.DecodeError:
        return None


def _lane(fields: Fields) -> Lane:
    return "bulk" if fields.get(b"lane") == b"bulk" else "interactive"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
