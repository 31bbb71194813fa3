"""Redis clients with socket timeouts, so a down or hung Redis fails fast instead of hanging."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inferq.errors import ServiceUnavailable
from inferq.settings import ServiceSettings

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


def connect(services: ServiceSettings, *, blocking_ms: int = 0) -> aioredis.Redis:
    """A client for ``services.redis_url``; ``blocking_ms`` widens the read timeout for XREADGROUP BLOCK."""
    if services.redis_url is None:
        raise ServiceUnavailable("no Redis URL configured (INFERQ_REDIS_URL)")
    timeout = services.socket_timeout_s + blocking_ms / 1000
    client: aioredis.Redis = aioredis.Redis.from_url(
        services.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=services.socket_timeout_s,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return client


@contextlib.contextmanager
def unavailable_as_domain_error(what: str = "redis") -> Iterator[None]:
    """Turn connection errors and timeouts into ``ServiceUnavailable`` (503 at the API)."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise ServiceUnavailable(f"{what} is unavailable: {exc}") from exc
