"""Registry change notices: a revision counter and a pub/sub channel in Redis, so every process reloads at once.

Writers (the API's model routes, ``inferq models import``) call ``CatalogNotifier.changed`` after their
Postgres transaction committed: ``INCR {prefix}:catalog:rev`` and ``PUBLISH {prefix}:catalog:changed``
in one round trip. Readers (API catalogs, worker pools) run a ``RevisionWatcher``: a message wakes them
at once. Pub/sub is at-most-once (a reconnect, a Redis restart or an ``ACL LOAD`` lose messages), so the
watcher also reads the revision every ``poll_s`` and reports any change of its value, and every
(re)subscription counts as a change. Postgres stays the truth: with Redis down a write still commits,
and readers fall back to their own periodic reload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog

from inferq.contracts.names import Names

log = structlog.get_logger(__name__)

POLL_S = 0.5
_UNREAD = object()


class CatalogNotifier:
    """Announces registry changes; ``changed`` never raises (a failed announcement is logged)."""

    def __init__(self, redis: aioredis.Redis, *, names: Names, timeout_s: float = 1.0) -> None:
        self._redis = redis
        self._names = names
        self._timeout_s = timeout_s

    async def changed(self, model: str) -> None:
        """Bump the revision and publish ``model``'s name; call it after the change committed."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(self._names.catalog_revision())
        pipe.publish(self._names.catalog_channel(), model)
        try:
            await asyncio.wait_for(pipe.execute(), timeout=self._timeout_s)
        except Exception as exc:  # best effort by design: readers still reload periodically
            log.warning("catalog.notify_failed", model=model, error=str(exc) or type(exc).__name__)


class RevisionWatcher:
    """Calls ``on_change`` when the registry may have changed: on every announcement, on every
    (re)subscription, and when the polled revision differs from the last one read."""

    def __init__(self, redis: aioredis.Redis, *, names: Names, poll_s: float = POLL_S) -> None:
        self._redis = redis
        self._names = names
        self._poll_s = poll_s

    async def run(self, on_change: Callable[[], None], stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set (or the task is cancelled); ``on_change`` must not block."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._listen(on_change, stop), name="catalog.listen")
            group.create_task(self._poll(on_change, stop), name="catalog.poll")

    async def _listen(self, on_change: Callable[[], None], stop: asyncio.Event) -> None:
        channel, backoff = self._names.catalog_channel(), 0.05
        while not stop.is_set():
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(channel)
                    on_change()  # whatever was announced while nobody listened
                    backoff = 0.05
                    while not stop.is_set():
                        if await pubsub.get_message(timeout=1.0) is not None:
                            on_change()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect with backoff; the poll keeps reading meanwhile
                log.warning("catalog.listen_failed", error=str(exc) or type(exc).__name__, backoff_s=backoff)
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 2.0)

    async def _poll(self, on_change: Callable[[], None], stop: asyncio.Event) -> None:
        key, seen = self._names.catalog_revision(), _UNREAD
        while not await _sleep_unless(stop, self._poll_s):
            try:
                value = await asyncio.wait_for(self._redis.get(key), timeout=max(self._poll_s, 1.0))
            except asyncio.CancelledError:
                raise
            except Exception:  # the listener logs the outage; the next poll tries again
                continue
            if seen is not _UNREAD and value != seen:  # any change: a restarted Redis starts again from nothing
                on_change()
            seen = value


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
