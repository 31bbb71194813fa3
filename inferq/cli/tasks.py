"""``inferq tasks`` (the arq worker: webhook attempts, the reconciler, retention) and ``inferq webhooks secret``."""

from __future__ import annotations

import msgspec
from sqlalchemy.exc import IntegrityError

from inferq.cli.output import emit, say
from inferq.cli.runtime import opened, require_safe_redis
from inferq.errors import InvalidInput
from inferq.observability.exposition import served
from inferq.observability.logs import configure_logging
from inferq.settings import Settings, redacted_url
from inferq.store.deliveries import DeliveryStore
from inferq.streams.tasks import queue_name
from inferq.webhooks.signatures import new_secret


async def run_tasks_command(settings: Settings) -> int:
    """Start embedded services when no URLs are set, then run the task worker until SIGTERM/SIGINT."""
    from inferq.workers.task_metrics import TaskMetrics
    from inferq.workers.tasks import run_tasks

    configure_logging(settings.log_level)
    metrics = TaskMetrics()
    async with (
        opened(settings, redis=True) as rt,
        served(metrics.render, host=settings.host, port=settings.tasks_metrics_port),  # INFERQ_TASKS_METRICS_PORT
    ):
        await require_safe_redis(settings, rt.services, embedded=settings.services.redis_url is None)
        queue, redis = queue_name(settings.services.key_prefix), redacted_url(rt.services.redis_url)
        say(f"inferq tasks: queue {queue} on redis {redis}")
        return await run_tasks(msgspec.structs.replace(settings, services=rt.services), metrics=metrics)


async def print_secret(settings: Settings, *, tenant: str, rotate: bool) -> int:
    """Print the tenant's signing secret (made on first use), and the previous one during a rotation, as JSON."""
    async with opened(settings) as rt:
        store = DeliveryStore(rt.sessions, new_secret=new_secret)
        try:
            current, previous = await store.secret(tenant, rotate=rotate)
        except IntegrityError:  # the secret row references the tenant
            raise InvalidInput(f"no tenant {tenant!r}", field="tenant") from None
    emit({"secret": current, "previous": previous})
    return 0
