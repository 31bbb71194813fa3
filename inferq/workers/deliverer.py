"""Webhook attempts as arq jobs: sign, send once, record the outcome, schedule the next attempt.

Postgres decides: an attempt runs only while its delivery is pending with exactly ``attempt - 1``
attempts recorded, and ``record_attempt`` writes attempt ``n`` once, so a job run twice (arq is
at-least-once) sends at most one extra request and records nothing twice.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import structlog
from arq.worker import Retry
from redis.exceptions import RedisError

from inferq.contracts.deliveries import DeliveryStatus
from inferq.errors import DeliveryNotFound, ServiceUnavailable
from inferq.settings import JobsSettings
from inferq.store.deliveries import DeliveryStore
from inferq.streams.connection import UNAVAILABLE
from inferq.streams.tasks import TaskQueue
from inferq.webhooks import signatures
from inferq.webhooks.schedule import next_delay
from inferq.webhooks.sender import send
from inferq.workers.task_metrics import TaskMetrics

log = structlog.get_logger(__name__)

STORE_RETRY_S = 2.0  # Postgres unavailable: arq runs the attempt again after 2, 4, 8 … s
STORE_RETRY_MAX_S = 60.0


class Deliverer:
    """Makes one attempt of a delivery and schedules the next, as the retry schedule says."""

    def __init__(
        self,
        *,
        deliveries: DeliveryStore,
        queue: TaskQueue,
        client: httpx.AsyncClient,
        jobs: JobsSettings,
        allow_private: bool,
        metrics: TaskMetrics | None = None,
    ) -> None:
        self._deliveries = deliveries
        self._queue = queue
        self._client = client
        self._jobs = jobs
        self._allow_private = allow_private
        self._metrics = metrics

    async def attempt(self, delivery_id: str, *, n: int) -> DeliveryStatus | None:
        """Make attempt ``n`` (from 1); the delivery's status afterwards, or None when there was nothing to do.

        Nothing to do: the delivery is gone (retention), no longer pending, or attempt ``n`` was made.
        """
        try:
            task = await self._deliveries.load(delivery_id)
        except DeliveryNotFound:
            log.info("delivery.skipped", delivery_id=delivery_id, attempt=n, reason="not_found")
            return None
        if task.status != "pending" or task.attempts != n - 1:
            log.info("delivery.skipped", delivery_id=delivery_id, attempt=n, status=task.status, made=task.attempts)
            return None
        secrets = await self._deliveries.active_secrets(task.tenant)
        headers = signatures.headers(secrets, msg_id=task.event_id, timestamp=int(time.time()), body=task.body)
        outcome = await send(
            self._client,
            url=task.url,
            body=task.body,
            headers=headers,
            timeout_s=self._jobs.webhook_timeout_s,
            allow_private=self._allow_private,
        )
        delay_s = None
        if not (outcome.ok or outcome.gone):
            delay_s = next_delay(
                n,
                scale=self._jobs.webhook_retry_scale,
                max_attempts=self._jobs.webhook_max_attempts,
                retry_after=outcome.retry_after_s,
            )
        if self._metrics is not None:  # sent: counted even if recording it fails below (it is sent again then)
            self._metrics.count_attempt(outcome, retry_in_s=delay_s)
        next_at = None if delay_s is None else dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay_s)
        try:
            status = await self._deliveries.record_attempt(
                delivery_id,
                n=n,
                status=outcome.status,
                error=outcome.error,
                excerpt=outcome.excerpt,
                duration_ms=outcome.duration_ms,
                next_attempt_at=next_at,
                ok=outcome.ok,
                gone=outcome.gone,
            )
        except DeliveryNotFound:  # retention deleted its job while we were sending
            log.info("delivery.skipped", delivery_id=delivery_id, attempt=n, reason="deleted")
            return None
        log.info(
            "delivery.attempted",
            delivery_id=delivery_id,
            event_id=task.event_id,
            attempt=n,
            http_status=outcome.status,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            status=status,
            next_in_s=delay_s,
        )
        # NOTE: "pending" without a delay of ours: a concurrent run recorded attempt n first and scheduled n + 1.
        if status == "pending" and delay_s is not None:
            await self._schedule(delivery_id, attempt=n + 1, defer_s=delay_s)
        return status

    async def _schedule(self, delivery_id: str, *, attempt: int, defer_s: float) -> None:
        try:
            await self._queue.deliver(delivery_id, attempt=attempt, defer_s=defer_s)
        except (RedisError, *UNAVAILABLE) as exc:  # the row is pending in Postgres: the reconciler schedules it
            log.warning("delivery.schedule_deferred", delivery_id=delivery_id, attempt=attempt, error=str(exc))


async def deliver(ctx: dict[str, Any], delivery_id: str, *, attempt: int) -> str:
    """The arq job ``deliver``: attempt ``attempt`` of ``delivery_id`` (``ctx["deliverer"]`` makes it).

    Postgres unavailable: arq runs it again with backoff (``Retry``), up to the function's ``max_tries``.
    """
    deliverer: Deliverer = ctx["deliverer"]
    try:
        status = await deliverer.attempt(delivery_id, n=attempt)
    except ServiceUnavailable as exc:
        defer_s = min(STORE_RETRY_MAX_S, STORE_RETRY_S * 2 ** (ctx.get("job_try", 1) - 1))
        log.warning("delivery.store_unavailable", delivery_id=delivery_id, attempt=attempt, retry_in_s=defer_s)
        raise Retry(defer=defer_s) from exc
    return status or "skipped"
