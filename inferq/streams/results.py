"""Result keys: the worker's terminal result, the API's 202 placeholder, and their TTLs.

Values are one marker byte plus msgpack: ``R`` a terminal ``InferResult``, ``P`` a ``Pending``
placeholder. A result is kept for the long TTL only when a caller was given a 202 (placeholder
present), else for the short one, so Redis memory stays bounded at high request rates.
The first terminal result wins: a request re-run after a crash never gets a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from inferq.contracts.messages import InferResult, Pending, StoredResult, message_encoder, stored_decoder

RESULT, PENDING = b"R", b"P"

# KEYS[1] result key; ARGV[1] value (R…), ARGV[2] long TTL s, ARGV[3] short TTL s, ARGV[4] channel ('' = none),
# ARGV[5] producer reply stream ('' = none), ARGV[6] its approximate MAXLEN.
# Returns 1 when stored (and announced), 0 when a terminal result was already there: a request re-run
# after a crash is announced once. NOTE: the channel and reply stream are not declared keys; in Redis
# Cluster the reply stream would need the result key's slot.
STORE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 1) == 'R' then return 0 end
local ttl = ARGV[3]
if current then ttl = ARGV[2] end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[1]) end
if ARGV[5] ~= '' then redis.call('XADD', ARGV[5], 'MAXLEN', '~', ARGV[6], '*', 'm', string.sub(ARGV[1], 2)) end
return 1
"""

# KEYS[1] result key; ARGV[1] placeholder (P…), ARGV[2] long TTL s.
# A result that already arrived is kept for the long TTL instead of being replaced.
PLACEHOLD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 0
"""


@dataclass(frozen=True, slots=True)
class ResultTTL:
    """Seconds a result is kept: ``long`` after a 202, ``short`` (≈ 2 × max wait) otherwise."""

    long: int = 24 * 3600
    short: int = 120


def encode_result(result: InferResult) -> bytes:
    return RESULT + message_encoder.encode(result)


def decode_stored(value: bytes) -> StoredResult:
    decoded: StoredResult = stored_decoder.decode(memoryview(value)[1:])
    return decoded


class ResultStore:
    """Reads and writes result keys; the write side is used inside the worker's ack pipeline."""

    def __init__(self, redis: aioredis.Redis, *, ttl: ResultTTL) -> None:
        self._redis = redis
        self.ttl = ttl
        self._placehold = redis.register_script(PLACEHOLD)

    def store(
        self, pipe: Pipeline, *, key: str, value: bytes, channel: str | None = None, stream: str | None = None,
        stream_max_len: int = 100_000,
    ) -> None:  # fmt: skip
        """Queue the conditional store of one encoded result (``encode_result``) on ``pipe``, announced
        on ``channel`` (an API instance) or appended to ``stream`` (a producer's reply stream, plain msgpack).

        NOTE: EVAL, not a registered script: redis-py sends SCRIPT EXISTS before every pipeline that
        holds a registered script (a second round trip per batch), and EVALSHA fails with NOSCRIPT
        after a Redis restart. Redis caches the compiled script by its hash either way.
        """
        args: list[Any] = [value, self.ttl.long, self.ttl.short, channel or "", stream or "", stream_max_len]
        pipe.eval(STORE, 1, key, *args)

    async def placehold(self, *, key: str, pending: Pending) -> None:
        """Record a 202: the request exists and its result must be kept for the long TTL."""
        await self._placehold(keys=[key], args=[PENDING + message_encoder.encode(pending), self.ttl.long])

    async def get(self, key: str) -> StoredResult | None:
        value = await self._redis.get(key)
        return None if value is None else decode_stored(value)
