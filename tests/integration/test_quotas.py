"""Per-key quotas against a real Redis: a client above its rate never gets more than its rate (plus the
burst), whether the interval is a whole number of milliseconds or not, on both scripts. (How close below
it a client gets depends on the machine: bench/security.py measures that.)"""

from __future__ import annotations

import secrets
import time

import pytest
import redis.asyncio as aioredis

from inferq.contracts.auth import Limits, Principal
from inferq.contracts.messages import message_encoder
from inferq.contracts.names import Names
from inferq.errors import RateLimited
from inferq.settings import Settings
from inferq.streams.producer import Producer, Submission
from inferq.streams.quotas import Quota, Quotas

pytestmark = pytest.mark.integration

WINDOW_S = 1.0


def caller(rate: float, burst: int = 1) -> Principal:
    limits = Limits(rate_per_s=rate, burst=burst, concurrency=10**6, max_rows=10, max_elements=100)
    return Principal(key_id=secrets.token_hex(8), tenant="quota-test", scopes=frozenset({"predict"}), limits=limits)


@pytest.mark.parametrize("rate", [30.0, 300.0, 1500.0])
async def test_other_routes_get_their_rate_and_no_more(
    settings: Settings, redis_client: aioredis.Redis, rate: float
) -> None:
    quotas, principal = Quotas(redis_client, Names(settings.services.key_prefix)), caller(rate)
    admitted = refused = 0
    started = time.monotonic()
    while time.monotonic() - started < WINDOW_S:
        try:
            await quotas.hit(principal)
            admitted += 1
        except RateLimited:
            refused += 1
    elapsed = time.monotonic() - started
    allowed = rate * elapsed + 1
    assert refused > 0  # the loop went above the rate
    assert admitted <= allowed * 1.02 + 1, (admitted, allowed)  # never more (how close below depends on the machine)


@pytest.mark.parametrize("rate", [300.0, 600.0, 1500.0])
async def test_predictions_get_their_rate_and_no_more(
    settings: Settings, redis_client: aioredis.Redis, rate: float
) -> None:
    names = Names(settings.services.key_prefix)
    stream = f"{settings.services.key_prefix}:quota-test:{secrets.token_hex(4)}"
    producer, principal = Producer(redis_client), caller(rate)
    quota = Quota.of(principal, names)
    admitted = refused = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < WINDOW_S:
            request_id = secrets.token_hex(16)
            submission = Submission(
                stream=stream, rate_key=f"{stream}:rate", limit=10**6, message=message_encoder.encode({"x": 1}),
                quota=quota, request_id=request_id, ttl_ms=60_000,
            )  # fmt: skip
            try:
                await producer.submit(submission)
                admitted += 1
            except RateLimited:
                refused += 1
        elapsed = time.monotonic() - started
    finally:
        await redis_client.delete(stream, quota.quota_key, quota.in_flight_key)
    allowed = rate * elapsed + 1
    assert refused > 0
    assert admitted <= allowed * 1.02 + 1, (admitted, allowed)
