"""The API instance's reply listener: one pub/sub channel, futures keyed by request id.

Subscribe before the first XADD; pub/sub is at-most-once, so a caller whose wait runs out reads
the result key once before answering 202. Results published while the subscription was down (a
dropped connection, an ``ACL LOAD``) reached nobody: after every re-subscription the listener reads
the result keys of the callers still waiting, so none of them waits out its whole wait for an
answer that is already stored.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog

from inferq.contracts.messages import InferResult
from inferq.streams.results import decode_stored

log = structlog.get_logger(__name__)


class ReplyListener:
    """Resolves ``expect(id)`` futures from results published on this instance's channel."""

    def __init__(self, redis: aioredis.Redis, *, channel: str, result_key: Callable[[str], str]) -> None:
        self._redis = redis
        self.channel = channel
        self._result_key = result_key
        self._waiters: dict[str, asyncio.Future[InferResult]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        # NOTE: stopping is an event the loop checks, then a cancel: redis-py sends through asyncio.wait_for,
        # which on Python 3.11 can swallow a cancel (see workers/executor.py), and a stop must not hang.
        self._stopping = asyncio.Event()

    @staticmethod
    def instance_name() -> str:
        return f"api-{uuid.uuid4().hex[:12]}"

    async def start(self) -> None:
        """Subscribe and start dispatching; returns once the subscription is confirmed."""
        self._task = asyncio.create_task(self._run(), name=f"replies:{self.channel}")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # we are cancelled too: do not swallow it
                    raise
        for future in self._waiters.values():
            future.cancel()
        self._waiters.clear()

    def expect(self, request_id: str) -> asyncio.Future[InferResult]:
        """A future for ``request_id``'s result; register it before enqueueing."""
        future: asyncio.Future[InferResult] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiters.pop(request_id, None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    if self._ready.is_set():
                        await self._catch_up()
                    self._ready.set()
                    backoff = 0.05
                    while not self._stopping.is_set():
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect with backoff; never a hot loop
                log.warning("replies.reconnect", channel=self.channel, error=str(exc), backoff_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _catch_up(self) -> None:
        """Resolve the waiters whose result was stored while nobody listened (one pipelined read)."""
        ids = list(self._waiters)
        if not ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        for request_id in ids:
            pipe.get(self._result_key(request_id))
        found = [value for value in await pipe.execute() if value is not None]
        for value in found:
            self._dispatch(value)
        log.info("replies.caught_up", channel=self.channel, waiting=len(ids), found=len(found))

    def _dispatch(self, data: bytes) -> None:
        try:
            result = decode_stored(data)
        except Exception as exc:
            log.warning("replies.undecodable", error=str(exc))
            return
        future = self._waiters.pop(result.id, None)
        if future is not None and not future.done() and isinstance(result, InferResult):
            future.set_result(result)
