"""What the guarantees need from the Redis server, read from ``INFO`` (which least-privilege users and
managed Redis allow, unlike ``CONFIG GET``).

Refused: a server older than 7.0 (the stream commands the workers rely on) and any
``maxmemory-policy`` but ``noeviction`` — an evicted stream takes its accepted requests and its
consumer group with it, an evicted result loses an answer. Warned about outside development: AOF
off, since a restart then loses what was accepted since the last snapshot (``INFO`` does not show
the ``save`` schedule, so RDB-only persistence is reported as not durable).
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from inferq.errors import UnsafeService
from inferq.streams.connection import UNAVAILABLE

log = structlog.get_logger(__name__)

MIN_VERSION = (7, 0)


class RedisFacts(msgspec.Struct, frozen=True, kw_only=True):
    """The server's answers that bear on durability."""

    version: str
    eviction_policy: str
    aof_enabled: bool

    def refusals(self) -> list[str]:
        """Why inferq must not run on this server (empty when it may)."""
        found = []
        if _version(self.version) < MIN_VERSION:
            found.append(f"Redis {self.version} is older than 7.0, which inferq needs for its stream commands")
        if self.eviction_policy != "noeviction":
            found.append(
                f"Redis maxmemory-policy is {self.eviction_policy}: inferq needs noeviction (an evicted stream "
                "loses accepted requests and its consumer group); set `maxmemory-policy noeviction` "
                "(ops/redis/redis.conf)"
            )
        return found

    def cautions(self) -> list[str]:
        """What weakens the guarantees without breaking them (reported outside development)."""
        if self.aof_enabled:
            return []
        return [
            "Redis persistence (appendonly) is off: a Redis restart loses requests accepted since its last "
            "snapshot; set `appendonly yes` and `appendfsync everysec` (ops/redis/redis.conf)"
        ]


async def read_facts(redis: aioredis.Redis) -> RedisFacts | None:
    """One plain ``INFO`` (its default sections; several sections in one call are a syntax error
    before Redis 7.0, which must be refused, not missed). None when the server does not say its
    eviction policy (a proxy or a managed service that trims ``INFO``)."""
    info: dict[str, Any] = await redis.info()
    if "maxmemory_policy" not in info:
        return None
    return RedisFacts(
        version=str(info.get("valkey_version") or info.get("redis_version", "0")),
        eviction_policy=str(info["maxmemory_policy"]),
        aof_enabled=str(info.get("aof_enabled", "0")) == "1",
    )


async def check_redis(redis: aioredis.Redis, *, dev: bool) -> RedisFacts | None:
    """At process start: ``UnsafeService`` on a server that breaks the guarantees, a warning for one that
    weakens them (unless ``dev``). A server that cannot be asked is logged and let be (the process
    waits for Redis as usual; the API's readiness check keeps checking the eviction policy)."""
    try:
        facts = await read_facts(redis)
    except (*UNAVAILABLE, ResponseError) as exc:  # down, or INFO denied by an ACL
        log.warning("redis.unverified", error=str(exc) or type(exc).__name__)
        return None
    if facts is None:
        log.warning("redis.unverified", error="INFO does not report maxmemory_policy")
        return None
    refusals = facts.refusals()
    if refusals:
        raise UnsafeService("; ".join(refusals), version=facts.version, eviction_policy=facts.eviction_policy)
    if not dev:
        for caution in facts.cautions():
            log.warning("redis.not_durable", detail=caution)
    return facts


def _version(text: str) -> tuple[int, int]:
    major, _, rest = text.partition(".")
    minor = rest.partition(".")[0]
    return (int(major) if major.isdigit() else 0, int(minor) if minor.isdigit() else 0)
