"""A partition's bookkeeping: the alive key (model readiness), the drain rate (admission's Retry-After),
and removal of dead consumers from the group."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
import structlog

from inferq.settings import QueueSettings
from inferq.streams.consumer import remove_idle_consumers
from inferq.streams.partition import Partition
from inferq.workers.backoff import sleep_unless
from inferq.workers.executor import Throughput

log = structlog.get_logger(__name__)

TICK_S = 1.0
ALIVE_TTL_S = 10
RATE_TTL_S = 60
WORKER_RATE_MAX_AGE_MS = 10_000
CONSUMER_SWEEP_S = 60.0

# KEYS[1] rate key, KEYS[2] per-worker rates (hash), KEYS[3] alive key; ARGV[1] consumer, ARGV[2] its
# drain rate (rows/s), ARGV[3] alive TTL s. The rate key holds the sum over workers heard from lately:
# admission divides the backlog by it, and every worker of a partition drains the same backlog.
PUBLISH_RATE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. now)
local total = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local rate, at = string.match(all[i + 1], '^(%S+) (%d+)$')
  if rate == nil or now - tonumber(at) > {WORKER_RATE_MAX_AGE_MS} then
    redis.call('HDEL', KEYS[2], all[i])
  else
    total = total + tonumber(rate)
  end
end
redis.call('SET', KEYS[1], string.format('%.3f', total), 'EX', {RATE_TTL_S})
redis.call('EXPIRE', KEYS[2], {RATE_TTL_S})
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
return 1
"""

# KEYS[1] alive key; ARGV[1] consumer: remove it only if this worker wrote it last.
RELEASE_ALIVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Upkeep:
    """Every second: alive key and drain rate; every minute: consumers idle for ``consumer_idle_ms`` removed."""

    def __init__(
        self, *, redis: aioredis.Redis, part: Partition, queue: QueueSettings, consumer: str, throughput: Throughput
    ) -> None:
        self._redis = redis
        self._part = part
        self._queue = queue
        self._consumer = consumer
        self._throughput = throughput
        self._publish = redis.register_script(PUBLISH_RATE)
        self._release = redis.register_script(RELEASE_ALIVE)
        self._rate = 0.0
        self._last = (time.monotonic(), 0)

    @property
    def rate(self) -> float:
        """This worker's smoothed drain rate for the partition, rows/s."""
        return self._rate

    async def run(self, stop: asyncio.Event) -> None:
        next_sweep = time.monotonic() + CONSUMER_SWEEP_S
        while True:
            try:
                await self.tick()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + CONSUMER_SWEEP_S
                    await self._remove_idle_consumers()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the consumer loop reports Redis trouble; keep this quiet
                log.debug("upkeep.failed", partition=self._part.key, error=str(exc))
            if await sleep_unless(stop, TICK_S):
                break
        try:
            await self._release(keys=[self._part.alive_key], args=[self._consumer])
        except Exception as exc:
            log.debug("upkeep.release_failed", partition=self._part.key, error=str(exc))

    async def tick(self) -> None:
        """Measure the drain rate since the last tick and publish it with the alive key."""
        now, rows = time.monotonic(), self._throughput.rows
        then, before = self._last
        self._last = (now, rows)
        if rows > before and now > then:
            measured = (rows - before) / (now - then)
            # NOTE: idle ticks keep the last busy rate: it estimates what the partition can drain.
            self._rate = measured if self._rate == 0 else 0.5 * self._rate + 0.5 * measured
        keys = [self._part.rate_key, f"{self._part.rate_key}:workers", self._part.alive_key]
        await self._publish(keys=keys, args=[self._consumer, f"{self._rate:.3f}", ALIVE_TTL_S])

    async def _remove_idle_consumers(self) -> None:
        removed = await remove_idle_consumers(
            self._redis, self._part, idle_ms=self._queue.consumer_idle_ms, keep=self._consumer
        )
        if removed:
            log.info("consumers.removed", partition=self._part.key, removed=removed)
