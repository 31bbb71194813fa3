"""The Redis server checks that protect the guarantees, against a Redis of the test's own (its
configuration is changed at run time, which the shared server must never see): refusal of an evicting
Redis at startup and in readiness, a warning when AOF is off, silence in development."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from apikit import closed_port, running, tuned
from structlog.testing import capture_logs

from inferq.cli.runtime import require_safe_redis
from inferq.embedded import EmbeddedRedis
from inferq.errors import UnsafeService
from inferq.settings import Settings
from inferq.streams.durability import RedisFacts, check_redis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("durability-redis"), persist=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own(own_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url)
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("appendonly", "yes")
    try:
        yield client
    finally:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.aclose()


async def test_a_durable_noeviction_redis_passes_without_a_warning(own: aioredis.Redis) -> None:
    with capture_logs() as logs:
        facts = await check_redis(own, dev=False)
    assert facts is not None
    assert facts.eviction_policy == "noeviction"
    assert facts.aof_enabled
    assert not [e for e in logs if e["log_level"] == "warning"]


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random"])
async def test_an_evicting_redis_is_refused_naming_the_setting(own: aioredis.Redis, policy: str) -> None:
    await own.config_set("maxmemory-policy", policy)
    with pytest.raises(UnsafeService) as refused:
        await check_redis(own, dev=True)  # development does not lift a refusal
    assert f"maxmemory-policy is {policy}" in refused.value.message
    assert "noeviction" in refused.value.message
    assert refused.value.details["eviction_policy"] == policy


async def test_aof_off_is_a_warning_outside_development_only(own: aioredis.Redis) -> None:
    await own.config_set("appendonly", "no")
    with capture_logs() as production:
        assert await check_redis(own, dev=False) is not None
    with capture_logs() as development:
        assert await check_redis(own, dev=True) is not None
    warned = [e for e in production if e["event"] == "redis.not_durable"]
    assert len(warned) == 1
    assert "appendonly" in warned[0]["detail"]
    assert not [e for e in development if e["log_level"] == "warning"]


async def test_a_redis_that_cannot_be_asked_is_logged_not_refused(
    own: aioredis.Redis, own_redis: EmbeddedRedis
) -> None:
    await own.acl_setuser("noinfo", enabled=True, nopass=True, commands=["+ping"], keys=["*"])
    try:
        denied = aioredis.Redis(host="127.0.0.1", port=own_redis.port, username="noinfo")
        down = aioredis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
        with capture_logs() as logs:
            assert await check_redis(denied, dev=False) is None
            assert await check_redis(down, dev=False) is None
        await denied.aclose()
        await down.aclose()
    finally:
        await own.acl_deluser("noinfo")
    unverified = [e for e in logs if e["event"] == "redis.unverified"]
    assert len(unverified) == 2
    assert "NOPERM" in unverified[0]["error"] or "permission" in unverified[0]["error"]


def test_old_servers_are_refused_and_valkey_versions_read() -> None:
    assert RedisFacts(version="6.2.14", eviction_policy="noeviction", aof_enabled=True).refusals() == [
        "Redis 6.2.14 is older than 7.0, which inferq needs for its stream commands"
    ]
    assert RedisFacts(version="7.0.0", eviction_policy="noeviction", aof_enabled=True).refusals() == []
    assert RedisFacts(version="8.1.1", eviction_policy="noeviction", aof_enabled=False).refusals() == []
    assert RedisFacts(version="garbage", eviction_policy="noeviction", aof_enabled=True).refusals() != []


async def test_startup_refuses_an_evicting_redis(
    own: aioredis.Redis, own_redis: EmbeddedRedis, settings: Settings
) -> None:
    await own.config_set("maxmemory-policy", "allkeys-lru")
    services = tuned(settings, services__redis_url=own_redis.url).services
    with pytest.raises(UnsafeService, match="maxmemory-policy is allkeys-lru"):
        await require_safe_redis(settings, services, embedded=False)


async def test_readiness_fails_when_the_policy_changes_at_run_time(
    own: aioredis.Redis, own_redis: EmbeddedRedis, settings: Settings, migrated_db: str
) -> None:
    async with running(tuned(settings, services__redis_url=own_redis.url)) as api:
        before = await api.client.get("/health/ready")
        await own.config_set("maxmemory-policy", "allkeys-lfu")
        after = await api.client.get("/health/ready")
        await own.config_set("maxmemory-policy", "noeviction")
        again = await asyncio.wait_for(api.client.get("/health/ready"), timeout=10)
    assert before.status_code == 200, before.text
    assert after.status_code == 503
    assert "maxmemory-policy is allkeys-lfu" in after.json()["checks"]["redis"]
    assert after.json()["checks"]["postgres"] == "ok"
    assert again.status_code == 200


async def test_readiness_with_info_denied_is_ready_when_redis_answers(
    own: aioredis.Redis, own_redis: EmbeddedRedis, settings: Settings, migrated_db: str
) -> None:
    # A least-privilege user without INFO: the policy cannot be checked (startup warns), the server can.
    await own.acl_setuser("noinfo", enabled=True, nopass=True, commands=["+@all", "-info"], keys=["*"], channels=["*"])
    try:
        url = f"redis://noinfo@127.0.0.1:{own_redis.port}/0"
        async with running(tuned(settings, services__redis_url=url)) as api:
            ready = await api.client.get("/health/ready")
    finally:
        await own.acl_deluser("noinfo")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["redis"] == "ok"
