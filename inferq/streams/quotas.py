"""Per-key quotas in Redis, exact across API processes: a rate (GCRA) and predictions in flight.

The rate is GCRA (the generic cell rate algorithm): one key per API key holding its theoretical
arrival time; a request is allowed when it would arrive no more than ``burst`` emission intervals
early. Predictions in flight are a sorted set of request ids scored by their deadline: a worker
removes its request when the result is stored, and an id past its deadline drops out by itself, so a
crashed process never leaks a slot for longer than a deadline.

For predictions both checks run inside the admission script (``Producer``), with the partition's
backlog check and the XADD, so the security layer adds no round trip to the hot path; other routes
spend one ``EVAL`` of :data:`HIT` here.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from inferq.contracts.auth import Principal
from inferq.contracts.names import Names
from inferq.errors import RateLimited
from inferq.streams.connection import unavailable_as_domain_error

# The GCRA step, shared by both scripts: T = emission interval (ms), tau = T * burst. Sets ``wait``
# (ms until allowed; 0 = allowed now) and ``tat`` (the new arrival time to store when admitted).
# NOTE: the arrival time is stored with its fraction (µs), and a refusal's wait is at least 1 ms: whole
# milliseconds let a rate whose interval is not a whole number of ms through many times over. A wait under
# 1 µs is none: doubles near 1.7e12 ms carry rounding errors of ~0.2 µs.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[{interval}])
local tat = tonumber(redis.call('GET', KEYS[{quota}]) or '0')
if tat < now then tat = now end
tat = tat + interval
local wait = tat - now - interval * tonumber(ARGV[{burst}])
if wait < 0.001 then wait = 0 end
"""


def gcra_step(*, interval: int, quota: int, burst: int) -> str:
    """The GCRA step for a script: the positions of ARGV interval (ms), KEYS quota key and ARGV burst."""
    return _GCRA.format(interval=interval, quota=quota, burst=burst)


# Spends the rate once the step allowed it: KEYS[{quota}] gets the new arrival time (``tat``, ``now``: the step's).
SPEND = "redis.call('SET', KEYS[{quota}], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)\n"

# KEYS[1] quota key; ARGV[1] interval ms, ARGV[2] burst. Returns 0, or the ms to wait.
HIT = (
    gcra_step(interval=1, quota=1, burst=2)
    + "if wait > 0 then return math.max(1, math.ceil(wait)) end\n"
    + SPEND.format(quota=1)
    + "return 0\n"
)


@dataclass(frozen=True, slots=True)
class Quota:
    """One API key's quota as the admission script takes it."""

    quota_key: str
    in_flight_key: str
    interval_ms: float
    burst: int
    concurrency: int
    rate_per_s: float

    @classmethod
    def of(cls, principal: Principal, names: Names) -> Quota:
        limits = principal.limits
        return cls(
            quota_key=names.quota(principal.key_id),
            in_flight_key=names.in_flight(principal.key_id),
            interval_ms=1000.0 / limits.rate_per_s,
            burst=limits.burst,
            concurrency=limits.concurrency,
            rate_per_s=limits.rate_per_s,
        )

    def rate_limited(self, wait_ms: float) -> RateLimited:
        retry_after = max(0.001, wait_ms / 1000)
        return RateLimited(
            f"rate limit of {self.rate_per_s:g} requests/s (burst {self.burst}) reached for this API key",
            retry_after_s=retry_after,
            limit=self.burst,
            scope="rate",
        )

    def saturated(self, wait_ms: float) -> RateLimited:
        return RateLimited(
            f"this API key already has {self.concurrency} predictions in flight",
            retry_after_s=max(0.001, wait_ms / 1000),
            limit=self.concurrency,
            scope="concurrency",
        )


class Quotas:
    """The rate quota of requests that are not predictions (one ``EVAL``)."""

    def __init__(self, redis: aioredis.Redis, names: Names) -> None:
        self._redis = redis
        self._names = names

    async def hit(self, principal: Principal) -> None:
        """Count one request against ``principal``'s rate; ``RateLimited`` when it is spent."""
        quota = Quota.of(principal, self._names)
        with unavailable_as_domain_error():
            wait_ms = await self._redis.eval(HIT, 1, quota.quota_key, str(quota.interval_ms), str(quota.burst))  # type: ignore[misc]
        if int(wait_ms) > 0:
            raise quota.rate_limited(float(wait_ms))


# The admission script with quotas: the GCRA step on KEYS[3], the in-flight set KEYS[4] (expired ids
# dropped, then counted), the backlog check; the XADD and both quota writes only when all three pass.
# KEYS[1] stream, KEYS[2] drain-rate key, KEYS[3] quota key, KEYS[4] in-flight set; ARGV[1] limit,
# ARGV[2] message, ARGV[3] interval ms, ARGV[4] burst, ARGV[5] concurrency, ARGV[6] request id,
# ARGV[7] ttl ms. Returns the entry id, or {'rate'|'concurrency', wait ms} or {'overloaded', backlog, rate}.
ADMIT_WITH_QUOTA = (
    _GCRA.format(interval=3, quota=3, burst=4)
    + """
if wait > 0 then return {'rate', string.format('%d', math.max(1, math.ceil(wait)))} end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local running = redis.call('ZCARD', KEYS[4])
if running >= tonumber(ARGV[5]) then return {'concurrency', '1000'} end
local backlog = redis.call('XLEN', KEYS[1])
if backlog >= tonumber(ARGV[1]) then
  return {'overloaded', backlog, redis.call('GET', KEYS[2]) or '0'}
end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
redis.call('SET', KEYS[3], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
local deadline = math.ceil(now + tonumber(ARGV[7]))
redis.call('ZADD', KEYS[4], deadline, ARGV[6])
if redis.call('PTTL', KEYS[4]) < deadline - now then redis.call('PEXPIREAT', KEYS[4], deadline) end
return id
"""
)
