"""What one API process opens at startup and closes at shutdown: clients, catalog, listener, services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from inferq.api.auth import Authenticator
from inferq.api.catalog import ModelCatalog
from inferq.api.comparisons import ComparisonService
from inferq.api.directory import ModelDirectory
from inferq.api.headers import CallLimits
from inferq.api.health import HealthChecks
from inferq.api.job_counts import JobCounts
from inferq.api.jobs import JobService
from inferq.api.lifecycle import ModelLifecycle
from inferq.api.metrics import Metrics
from inferq.api.model_uploads import ChildLimits, ModelUploads
from inferq.api.readiness import ReadinessView
from inferq.api.routing import Router
from inferq.api.service import PredictionService
from inferq.api.stats import StatsService
from inferq.api.v2.inference import V2Inference
from inferq.api.v2.metadata import V2Metadata
from inferq.contracts.names import Names
from inferq.errors import InvalidInput, ServiceUnavailable
from inferq.settings import Settings
from inferq.store.comparisons import Comparisons
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.deliveries import DeliveryStore
from inferq.store.jobs import JobStore
from inferq.store.keys import KeyHasher, KeyStore
from inferq.store.prediction_stats import PredictionStats
from inferq.store.registry import Registry
from inferq.streams.catalog_revisions import CatalogNotifier, RevisionWatcher
from inferq.streams.connection import connect
from inferq.streams.producer import Producer
from inferq.streams.quotas import Quotas
from inferq.streams.replies import ReplyListener
from inferq.streams.results import ResultStore, ResultTTL
from inferq.streams.tasks import TaskQueue
from inferq.webhooks.signatures import new_secret


@dataclass(frozen=True)
class Services:
    """The open services route handlers call (one set per process)."""

    predictions: PredictionService
    models: ModelDirectory
    health: HealthChecks
    catalog: ModelCatalog
    v2_metadata: V2Metadata
    v2_inference: V2Inference
    jobs: JobService
    auth: Authenticator
    quotas: Quotas
    keys: KeyStore
    stats: StatsService
    lifecycle: ModelLifecycle
    uploads: ModelUploads
    comparisons: ComparisonService


@contextlib.asynccontextmanager
async def opened(settings: Settings, *, metrics: Metrics) -> AsyncIterator[Services]:
    """Open Redis, Postgres, the catalog and the reply listener; drain and close them on exit.

    Neither service has to be up: the listener and the catalog keep retrying in the background,
    and requests meanwhile get 503s, so an API process starts and answers health checks regardless.
    """
    services, queue = settings.services, settings.queue
    if services.database_url is None:
        raise ServiceUnavailable("no database URL configured (INFERQ_DATABASE_URL)")
    if settings.auth.api_key_pepper is None:
        raise InvalidInput("no API key pepper configured (INFERQ_API_KEY_PEPPER)", field="INFERQ_API_KEY_PEPPER")
    hasher = KeyHasher(settings.auth.api_key_pepper)
    names = Names(services.key_prefix)
    redis = connect(services)
    engine = create_engine(
        services.database_url, connect_timeout_s=settings.api.health_timeout_s * 3, pool_timeout_s=2.0
    )
    sessionmaker = create_sessionmaker(engine)
    keys = KeyStore(sessionmaker, hasher=hasher)
    # Every registry write is announced, and every catalog watches: API processes agree within a second.
    registry = Registry(sessionmaker, on_change=CatalogNotifier(redis, names=names).changed)
    catalog = ModelCatalog(
        registry,
        refresh_s=settings.api.catalog_refresh_s,
        miss_refresh_s=settings.api.catalog_miss_refresh_s,
        changes=RevisionWatcher(redis, names=names),
    )
    tasks = TaskQueue(redis, prefix=services.key_prefix)
    instance = ReplyListener.instance_name()
    listener = ReplyListener(redis, channel=names.reply_channel(instance), result_key=names.result)
    short_ttl = queue.result_short_ttl_s or max(1, round(2 * queue.wait_max_s))
    limits = CallLimits.of(settings)
    readiness = ReadinessView(catalog=catalog, redis=redis, names=names, timeout_s=services.socket_timeout_s)
    router = Router(catalog=catalog, readiness=readiness, metrics=metrics)
    predictions = PredictionService(
        catalog=catalog,
        redis=redis,
        producer=Producer(redis),
        listener=listener,
        results=ResultStore(redis, ttl=ResultTTL(long=queue.result_ttl_s, short=short_ttl)),
        names=names,
        queue=queue,
        limits=limits,
        instance=instance,
        max_elements=settings.api.max_elements,
        redis_timeout_s=services.socket_timeout_s,
        metrics=metrics,
        router=router,
    )
    metrics.jobs = JobCounts(engine)  # inferq_jobs on /metrics, read from this process's engine
    try:
        await catalog.start()
        await router.start()  # the readiness view fallback reads (api/readiness.py)
        # NOTE: subscribe before the first XADD; when Redis is down the listener keeps retrying
        # in the background and this process still starts (predictions get 503 until it is back).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.start(), timeout=services.socket_timeout_s)
        directory = ModelDirectory(catalog=catalog, redis=redis, names=names, timeout_s=services.socket_timeout_s)
        health = HealthChecks(redis=redis, engine=engine, timeout_s=settings.api.health_timeout_s)
        yield Services(
            predictions=predictions,
            models=directory,
            health=health,
            catalog=catalog,
            v2_metadata=V2Metadata(catalog=catalog, directory=directory, health=health),
            v2_inference=V2Inference(
                predictions=predictions,
                limits=limits,
                max_elements=settings.api.max_elements,
                max_body_bytes=settings.api.max_body_bytes,
            ),
            jobs=JobService(
                catalog=catalog,
                store=JobStore(sessionmaker),
                deliveries=DeliveryStore(sessionmaker, new_secret=new_secret),
                redis=redis,
                names=names,
                settings=settings.jobs,
                max_elements=settings.api.max_elements,
                allow_private=settings.webhook_allow_private,
                scheduler=tasks.schedule,
            ),
            auth=Authenticator.of(settings, keys, hasher),
            quotas=Quotas(redis, names),
            keys=keys,
            stats=StatsService(catalog=catalog, store=PredictionStats(sessionmaker)),
            lifecycle=ModelLifecycle(registry=registry, catalog=catalog, directory=directory),
            uploads=_uploads(settings, registry, catalog),
            comparisons=ComparisonService(catalog=catalog, store=Comparisons(sessionmaker)),
        )
    finally:
        metrics.jobs = None
        predictions.drain()
        with contextlib.suppress(TimeoutError):  # mirrors being enqueued: best effort, but not cut off mid-XADD
            async with asyncio.timeout(2 * settings.services.socket_timeout_s + 0.5):
                await predictions.shadows.wait()
        await router.stop()
        await catalog.stop()
        await listener.stop()
        await tasks.aclose()
        await redis.aclose()
        await engine.dispose()


def _uploads(settings: Settings, registry: Registry, catalog: ModelCatalog) -> ModelUploads:
    api, engine = settings.api, settings.engine
    limits = ChildLimits(
        timeout_s=api.model_validate_timeout_s,
        cpu_s=api.model_validate_cpu_s,
        memory_bytes=api.model_validate_memory_bytes or ChildLimits.default_memory(engine.max_model_bytes),
        max_model_bytes=engine.max_model_bytes,
        intra_op_threads=engine.intra_op_threads,
        inter_op_threads=engine.inter_op_threads,
    )

    async def registered(model: str) -> None:
        await catalog.refresh()  # this process sees the new version at once

    return ModelUploads(registry, limits=limits, concurrency=api.model_validate_concurrency, on_registered=registered)
