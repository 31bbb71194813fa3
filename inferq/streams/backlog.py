"""How much work waits in each partition: what KEDA scales workers on, and the stream gauges.

Per lane, from ``XINFO GROUPS``: ``lag`` (entries not yet delivered to any consumer) and ``pending``
(delivered, not yet acknowledged). Acknowledged entries are deleted with their XACK, so the first entry
still in a stream is the oldest unfinished one, and ``XLEN - pending`` stands in for a ``lag`` that
Redis cannot compute. Workers alive come from the per-worker drain-rate hash the workers refresh every
second (``Upkeep``): a worker not heard from for ``ALIVE_WINDOW_MS`` is not counted. Every partition is
read in one pipelined round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from inferq.contracts.messages import Lane
from inferq.streams.partition import Partition

ALIVE_WINDOW_MS = 10_000  # the workers' upkeep drops a worker's rate after the same 10 s
_LANES: tuple[Lane, ...] = ("interactive", "bulk")


class LaneBacklog(msgspec.Struct, frozen=True, kw_only=True):
    """One stream of a partition."""

    lane: Lane
    backlog: int  # not yet delivered to a consumer
    pending: int  # delivered, not yet acknowledged (running, or held by a dead worker until reclaimed)
    oldest_age_s: float  # age of the oldest unfinished entry; 0 when there is none


class PartitionBacklog(msgspec.Struct, frozen=True, kw_only=True):
    """One model version: its lanes summed, the workers consuming it, its dead letters."""

    partition: str
    backlog: int
    pending: int
    consumers: int
    oldest_age_s: float
    dead_letters: int
    lanes: tuple[LaneBacklog, ...]


class Backlog(msgspec.Struct, frozen=True, kw_only=True):
    """Every partition; ``total`` = backlog + pending summed over all of them (KEDA's metric)."""

    total: int
    partitions: tuple[PartitionBacklog, ...]


async def read_backlog(redis: aioredis.Redis, parts: Sequence[Partition]) -> Backlog:
    """The backlog of ``parts`` in one round trip (a missing stream reads as empty; a refused command
    raises its ``ResponseError``: a wrong zero would tell KEDA there is nothing to do)."""
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    for part in parts:
        for lane in _LANES:
            stream = part.stream(lane)
            pipe.xinfo_groups(stream)
            pipe.xlen(stream)
            pipe.xrange(stream, count=1)
        pipe.hgetall(f"{part.rate_key}:workers")
        pipe.xlen(part.dlq)
    replies = await pipe.execute(raise_on_error=False)
    for reply in replies:  # a stream that does not exist yet is empty; any other error (NOPERM…) is one
        if isinstance(reply, ResponseError) and not str(reply).startswith("no such key"):
            raise reply
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    found = []
    cursor = 1
    for part in parts:
        lanes = []
        for lane in _LANES:
            groups, length, first = replies[cursor : cursor + 3]
            cursor += 3
            lanes.append(_lane(lane, part.group, groups, length, first, now_ms))
        workers, dead = replies[cursor : cursor + 2]
        cursor += 2
        found.append(
            PartitionBacklog(
                partition=part.key,
                backlog=sum(lane.backlog for lane in lanes),
                pending=sum(lane.pending for lane in lanes),
                consumers=_alive(workers, now_ms),
                oldest_age_s=max(lane.oldest_age_s for lane in lanes),
                dead_letters=dead if isinstance(dead, int) else 0,
                lanes=tuple(lanes),
            )
        )
    return Backlog(total=sum(p.backlog + p.pending for p in found), partitions=tuple(found))


def _lane(lane: Lane, group: str, groups: Any, length: Any, first: Any, now_ms: int) -> LaneBacklog:
    length = length if isinstance(length, int) else 0
    mine = next((g for g in groups if _text(g.get("name")) == group), None) if isinstance(groups, list) else None
    pending = int(mine.get("pending") or 0) if mine else 0
    lag = mine.get("lag") if mine else None
    # NOTE: without a group yet, every entry waits; when Redis cannot compute ``lag`` (nil), the
    # entries still present minus the pending ones are the undelivered ones (acked entries are deleted).
    backlog = int(lag) if isinstance(lag, int) else max(0, length - pending)
    oldest = 0.0
    if isinstance(first, list) and first:
        entry_id = _text(first[0][0])
        oldest = max(0.0, (now_ms - int(entry_id.partition("-")[0])) / 1000)
    return LaneBacklog(lane=lane, backlog=backlog, pending=pending, oldest_age_s=round(oldest, 3))


def _alive(workers: Any, now_ms: int) -> int:
    """Workers whose last drain-rate report (``"<rate> <ms>"``) is recent."""
    if not isinstance(workers, dict):
        return 0
    alive = 0
    for value in workers.values():
        _, _, at = _text(value).partition(" ")
        if at.isdigit() and now_ms - int(at) <= ALIVE_WINDOW_MS:
            alive += 1
    return alive


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
