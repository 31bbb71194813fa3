"""The API's reply listener across a dropped subscription, on a Redis of the test's own (its pub/sub
connections are killed, which the shared server's other users must never see)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from inferq.contracts.messages import InferResult
from inferq.contracts.names import Names
from inferq.embedded import EmbeddedRedis
from inferq.streams.replies import ReplyListener
from inferq.streams.results import encode_result

pytestmark = pytest.mark.integration

NAMES = Names("replies-test")


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("replies-redis")) as server:
        yield server


@pytest.fixture
async def client(own_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(own_redis.url)
    try:
        yield redis
    finally:
        await redis.aclose()


def result(request_id: str) -> InferResult:
    return InferResult(id=request_id, tenant="default", model="m", version=1, status="succeeded")


async def test_results_published_while_the_subscription_was_down_still_reach_their_callers(
    client: aioredis.Redis,
) -> None:
    listener = ReplyListener(client, channel=NAMES.reply_channel("api-test"), result_key=NAMES.result)
    await listener.start()
    try:
        missed, later, never = listener.expect("missed"), listener.expect("later"), listener.expect("never")
        # Drop the subscription, and store + publish a result while nobody listens (as a worker would):
        # one pipeline, so Redis runs all three before the listener can even notice and reconnect.
        pipe = client.pipeline(transaction=False)
        pipe.client_kill_filter(_type="pubsub")
        pipe.set(NAMES.result("missed"), encode_result(result("missed")))
        pipe.publish(listener.channel, encode_result(result("missed")))
        _, _, published_to = await pipe.execute()
        got = await asyncio.wait_for(missed, timeout=10)  # the re-subscription reads the stored result
        # Pub/sub works again afterwards.
        assert await client.publish(listener.channel, encode_result(result("later"))) == 1
        got_later = await asyncio.wait_for(later, timeout=10)
    finally:
        await listener.stop()
    assert published_to == 0  # the result really was published to nobody
    assert got.id == "missed"
    assert got_later.id == "later"
    assert never.cancelled()  # no result stored: still waiting until the listener stopped
