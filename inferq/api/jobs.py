"""Batch jobs as a service with no HTTP in it: submit (inline or upload), read, cancel, results, events.

A job is durable once ``submit`` returns: the job and every chunk are committed in one transaction
before the chunks are put on the bulk lane. When that enqueue fails (Redis down), the job still
stands: the reconciler enqueues chunks that never reached a stream.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import hashlib
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog

from inferq.api.catalog import ModelCatalog
from inferq.api.job_intake import Chunker
from inferq.contracts.deliveries import DeliveryView
from inferq.contracts.jobs import (
    JobRecord,
    JobStatus,
    NewJob,
    ResultFilter,
    ResultLine,
    ResultPage,
    WebhookSpec,
    completion_window_s,
)
from inferq.contracts.models import ModelRef, ModelVersion
from inferq.contracts.names import Names
from inferq.errors import InvalidInput, JobNotFound, ModelNotFound, ServiceUnavailable, UnsafeWebhookUrl
from inferq.inputs.uploads import UploadFormat, UploadRow, upload_parser
from inferq.settings import JobsSettings
from inferq.store.deliveries import DeliveryStore
from inferq.store.jobs import JobStore
from inferq.streams.chunks import enqueue_chunks
from inferq.streams.connection import UNAVAILABLE
from inferq.webhooks.addresses import check_url, resolve

log = structlog.get_logger(__name__)
SPOOL_IN_MEMORY = 8 * 1024 * 1024  # an upload with an Idempotency-Key is hashed first, spooled to disk beyond this
READ_SIZE = 1024 * 1024
_JOB_ID = re.compile(r"job_[0-9a-f]{32}")


class WebhookSecret(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant's signing secret, and during a rotation the previous one (receivers may hold either)."""

    secret: str
    previous: str | None = None


@dataclass(frozen=True, slots=True)
class Submission:
    """One ``POST /v1/jobs``, as the HTTP layer read it; ``rows`` are consumed once."""

    tenant: str
    model: str
    rows: AsyncIterable[UploadRow]
    webhook: WebhookSpec | None = None
    completion_window: str | float | None = None
    metadata: dict[str, str] | None = None
    idempotency_key: str | None = None
    request_sha256: str | None = None
    correlation_id: str = ""
    version: ModelVersion | None = None  # already resolved (an upload checks its CSV header against it)


class JobService:
    """The one entry point for jobs; built once per process around open clients."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        store: JobStore,
        deliveries: DeliveryStore,
        redis: aioredis.Redis,
        names: Names,
        settings: JobsSettings,
        max_elements: int,
        allow_private: bool,
        scheduler: Callable[[str, int, bool], Awaitable[None]] | None = None,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self.deliveries = deliveries
        self._redis = redis
        self._names = names
        self.settings = settings
        self._max_elements = max_elements
        self._allow_private = allow_private
        self._scheduler = scheduler

    async def resolve(self, model: str) -> ModelVersion:
        """The version a job on ``model`` (``name``, ``name@3``, ``name@alias``) would run on now."""
        try:
            ref = ModelRef.parse(model)
        except InvalidInput as exc:
            raise ModelNotFound(f"model {model!r} not found: {exc.message}", model=model) from None
        return await self._catalog.resolve(ref)

    async def submit(self, submission: Submission) -> tuple[JobRecord, bool]:
        """Check, store (one transaction) and enqueue a job; ``(job, created)`` (``False``: idempotent replay)."""
        version = submission.version or await self.resolve(submission.model)
        if submission.webhook is not None:
            await self.check_webhook(submission.webhook.url)
        window = completion_window_s(
            submission.completion_window,
            default_s=self.settings.completion_window_default_s,
            max_s=self.settings.completion_window_max_s,
        )
        job = NewJob(
            tenant=submission.tenant,
            model=version.model,
            version=version.version,
            completion_window_s=window,
            idempotency_key=submission.idempotency_key,
            request_sha256=submission.request_sha256,
            webhook=submission.webhook,
            correlation_id=submission.correlation_id,
            metadata=submission.metadata or {},
        )
        chunker = Chunker(
            version.signature,
            chunk_rows=self.settings.chunk_rows,
            max_rows=self.settings.max_job_rows,
            max_elements=self._max_elements,
        )
        record, created = await self._store.create(job, chunker.chunks(submission.rows))
        if created:
            structlog.contextvars.bind_contextvars(job_id=record.id)
            log.info("job.submitted", rows=record.total_rows, rejected=chunker.rejected, chunks=record.chunks_total)
            await self.enqueue(record.id)
            if record.terminal:  # every row was rejected: the job ended at once, its event is waiting
                await self._schedule_pending(record.tenant, record.id)
        return record, created

    async def check_webhook(self, url: str) -> None:
        """Refuse a webhook URL that is malformed or resolves to a private address (checked again at connect)."""
        target = check_url(url, allow_private=self._allow_private)
        try:
            await resolve(target, allow_private=self._allow_private)
        except (OSError, TimeoutError) as exc:  # gaierror (no such name) is an OSError
            raise UnsafeWebhookUrl(f"webhook host {target.host!r} does not resolve: {exc}", url=url) from None

    async def enqueue(self, job_id: str) -> int:
        """Put the job's never-enqueued chunks on the bulk lane; chunks enqueued (0 when Redis is down)."""
        done, after = 0, -1
        try:
            while chunks := await self._store.chunks_to_enqueue(job_id, after_seq=after, limit=64):
                entries = await enqueue_chunks(self._redis, self._names, chunks, now=_now())
                await self._store.mark_enqueued(job_id, [(seq, entry) for _, seq, entry in entries])
                done, after = done + len(chunks), chunks[-1].seq
        except Exception as exc:  # the job is committed: its 202 stands, the reconciler enqueues the rest
            level = log.warning if isinstance(exc, (*UNAVAILABLE, ServiceUnavailable)) else log.exception
            level("job.enqueue_deferred", job_id=job_id, enqueued=done, error=str(exc))
        return done

    async def get(self, tenant: str, job_id: str) -> JobRecord:
        return await self._store.get(tenant, checked_id(job_id))

    async def list(
        self,
        tenant: str,
        *,
        status: JobStatus | None,
        model: str | None,
        created_after: dt.datetime | None,
        created_before: dt.datetime | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[builtins.list[JobRecord], str | None]:
        return await self._store.list(
            tenant,
            status=status,
            model=model,
            created_after=created_after,
            created_before=created_before,
            cursor=cursor,
            limit=limit,
        )

    async def cancel(self, tenant: str, job_id: str) -> JobRecord:
        """Queued chunks are skipped by workers; running ones finish and their results are kept."""
        record = await self._store.cancel(tenant, checked_id(job_id))
        log.info("job.canceled", job_id=job_id)
        await self._schedule_pending(tenant, job_id)
        return record

    async def results_page(
        self, tenant: str, job_id: str, *, cursor: str | None, limit: int, which: ResultFilter
    ) -> ResultPage:
        return await self._store.results_page(tenant, checked_id(job_id), cursor=cursor, limit=limit, which=which)

    async def results(self, tenant: str, job_id: str, *, which: ResultFilter) -> AsyncIterator[ResultLine]:
        return await self._store.iter_results(tenant, checked_id(job_id), which=which)

    async def watch(self, tenant: str, job_id: str, *, interval_s: float = 0.5) -> AsyncIterator[JobRecord]:
        """The job now and at every change of status or counts, until it is terminal."""
        record = await self.get(tenant, job_id)
        yield record
        seen = _progress(record)
        while not record.terminal:
            await asyncio.sleep(interval_s)
            record = await self.get(tenant, job_id)
            if _progress(record) != seen:
                seen = _progress(record)
                yield record

    async def webhook_log(self, tenant: str, job_id: str) -> builtins.list[DeliveryView]:
        return await self.deliveries.for_job(tenant, checked_id(job_id))

    async def replay_webhook(self, tenant: str, job_id: str, delivery_id: str) -> DeliveryView:
        """A new series of attempts for one delivery (same event, same ``webhook-id``), scheduled now."""
        view = await self.deliveries.replay(tenant, checked_id(job_id), delivery_id)
        await self._schedule(delivery_id, attempt=view.attempts + 1, replay=True)
        return view

    async def webhook_secret(self, tenant: str, *, rotate: bool) -> WebhookSecret:
        secret, previous = await self.deliveries.secret(tenant, rotate=rotate)
        return WebhookSecret(secret=secret, previous=previous)

    async def _schedule_pending(self, tenant: str, job_id: str) -> None:
        for delivery in await self.deliveries.for_job(tenant, checked_id(job_id)):
            if delivery.status == "pending" and delivery.attempts == 0:
                await self._schedule(delivery.id, attempt=1)

    async def _schedule(self, delivery_id: str, *, attempt: int, replay: bool = False) -> None:
        """Hand the delivery to the task workers now; if that fails the reconciler's sweep finds it."""
        if self._scheduler is None:
            return
        try:
            await self._scheduler(delivery_id, attempt, replay)
        except Exception as exc:  # the delivery row is pending in Postgres: nothing is lost
            log.warning("webhook.schedule_deferred", delivery_id=delivery_id, error=str(exc))


async def upload_rows(
    chunks: AsyncIterable[bytes], *, fmt: UploadFormat, max_bytes: int, max_rows: int, columns: tuple[str, ...] | None
) -> AsyncIterator[UploadRow]:
    """Parse an upload as it streams."""
    parser = upload_parser(fmt, max_bytes=max_bytes, max_rows=max_rows, expected_columns=columns)
    async for chunk in chunks:
        for row in parser.feed(chunk):
            yield row
    for row in parser.close():
        yield row


async def inline_rows(inputs: list[Any], custom_ids: list[str | None] | None) -> AsyncIterator[UploadRow]:
    """Rows of an inline body (``line`` 0: not from a file)."""
    if custom_ids is not None and len(custom_ids) != len(inputs):
        raise InvalidInput(f"{len(custom_ids)} custom_ids for {len(inputs)} inputs", field="custom_ids")
    for i, row in enumerate(inputs):
        if not isinstance(row, dict | list):
            yield UploadRow(
                line=0, custom_id=custom_ids[i] if custom_ids else None, error="a row is a record or a list"
            )
        else:
            yield UploadRow(line=0, custom_id=custom_ids[i] if custom_ids else None, inputs=row)


async def spooled(chunks: AsyncIterable[bytes], *, fields: dict[str, str]) -> tuple[str, AsyncIterator[bytes]]:
    """Read an upload whole (memory, then disk) to hash it first: ``(sha256, the bytes again)``."""
    digest = hashlib.sha256(repr(sorted(fields.items())).encode())
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed by the reader below
    try:
        async for chunk in chunks:
            digest.update(chunk)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)

    async def again() -> AsyncIterator[bytes]:
        with spool:
            while data := spool.read(READ_SIZE):
                yield data

    return digest.hexdigest(), again()


def checked_id(job_id: str) -> str:
    """A job id as the server makes them; anything else is unknown (a 404) without touching Postgres."""
    if not _JOB_ID.fullmatch(job_id):
        raise JobNotFound(f"job {job_id[:80]!r} not found", job_id=job_id[:80])
    return job_id


def _progress(record: JobRecord) -> tuple[str, int, int]:
    return record.status, record.succeeded_rows, record.failed_rows


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
