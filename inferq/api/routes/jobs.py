"""``/v1/jobs``: submit (inline JSON or a JSONL/CSV upload), read, list, cancel, results, events, webhook log."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery
from litestar.response import Response, ServerSentEvent, Stream
from litestar.response.sse import ServerSentEventMessage

from inferq.api.guards import guard, principal_of
from inferq.api.jobs import JobService, Submission, WebhookSecret, inline_rows, spooled, upload_rows
from inferq.api.multipart import form_boundary, read_form
from inferq.api.routes.openapi import GUARDED, JobEventsOperation, JobSubmitOperation, problems
from inferq.contracts.deliveries import DeliveryView
from inferq.contracts.jobs import (
    JobCreateBody,
    JobPage,
    JobStatus,
    JobView,
    Metadata,
    ResultFilter,
    ResultPage,
    WebhookSpec,
)
from inferq.errors import MalformedRequest, PayloadTooLarge
from inferq.inputs.uploads import upload_format

_DOC = (
    "Rows inline (`application/json`: `{model, inputs, custom_ids?, webhook?, completion_window?, metadata?}`) or a "
    "JSONL/CSV file (`multipart/form-data`: the fields `model`, `webhook` (JSON), `completion_window`, `metadata` "
    "(JSON) first, then the `file` part). 202 once the job and all its rows are committed; with the same "
    "`Idempotency-Key` and body, 200 with the existing job; with another body, 409."
)
FORM_OVERHEAD = 1024 * 1024  # a multipart body may exceed the file limit by its fields and part headers
_JOBS = [guard("jobs")]
_FOUND = problems(*GUARDED, 400, 404, texts={404: "No such job for this tenant (job_not_found)"})
_LISTED = problems(*GUARDED, 400, 422, texts={422: "`limit` out of range, or a value Postgres cannot store"})
_SUBMIT_TEXTS = {
    404: "Unknown model, version or alias",
    409: "The same Idempotency-Key with another body (idempotency_conflict)",
    422: "Invalid rows, custom ids, window or metadata (invalid_input), or webhook URL (unsafe_webhook_url)",
}
_SUBMITTED = {
    200: ResponseSpec(data_container=JobView, description="The same Idempotency-Key and body again: the existing job"),
    **problems(*GUARDED, 400, 404, 409, 413, 422, texts=_SUBMIT_TEXTS),
}
_body = msgspec.json.Decoder(JobCreateBody)
_webhook = msgspec.json.Decoder(WebhookSpec)
_metadata = msgspec.json.Decoder(Metadata)
_line = msgspec.json.Encoder()


@post("/v1/jobs", guards=_JOBS, status_code=202, summary="Submit a batch job", description=_DOC, tags=["jobs"],
      request_max_body_size=None, responses=_SUBMITTED, operation_class=JobSubmitOperation)  # fmt: skip
async def submit_job(request: Request[Any, Any, Any], jobs: NamedDependency[JobService]) -> Response[JobView]:
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 255:
        raise MalformedRequest("Idempotency-Key must be 1 to 255 characters", header="Idempotency-Key")
    correlation_id = str(request.scope["state"].get("correlation_id", ""))
    content_type = request.headers.get("content-type", "")
    limit = jobs.settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > limit + FORM_OVERHEAD:  # refused before a byte is read
        raise _too_large(limit)
    if content_type.startswith("multipart/"):
        submission = await _upload(request, jobs, key=key, correlation_id=correlation_id, limit=limit)
    else:
        submission = await _inline(
            request, key=key, correlation_id=correlation_id, limit=min(limit, jobs.settings.max_inline_bytes)
        )
    record, created = await jobs.submit(submission)
    headers = {"Location": f"/v1/jobs/{record.id}"}
    return Response(record.view(), status_code=202 if created else 200, headers=headers)


async def _inline(request: Request[Any, Any, Any], *, key: str | None, correlation_id: str, limit: int) -> Submission:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(
                f"an inline job body is limited to {limit} bytes: upload larger jobs as a JSONL or CSV file",
                max_bytes=limit,
            )
    try:
        data = _body.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"the job body is not valid: {exc}") from None
    except RecursionError:
        raise MalformedRequest("the job body is nested too deeply") from None
    return Submission(
        tenant=_tenant(request),
        model=data.model,
        rows=inline_rows(data.inputs, data.custom_ids),
        webhook=data.webhook,
        completion_window=data.completion_window,
        metadata=data.metadata,
        idempotency_key=key,
        request_sha256=hashlib.sha256(body).hexdigest() if key else None,
        correlation_id=correlation_id,
    )


async def _upload(
    request: Request[Any, Any, Any], jobs: JobService, *, key: str | None, correlation_id: str, limit: int
) -> Submission:
    boundary = form_boundary(request.headers.get("content-type"))
    form = await read_form(request.stream(), boundary=boundary, max_bytes=limit + FORM_OVERHEAD)
    fields = form.fields
    unknown = set(fields) - {"model", "webhook", "completion_window", "metadata"}
    if unknown:
        raise MalformedRequest(f"unknown form fields: {', '.join(sorted(unknown))}", fields=sorted(unknown))
    if "model" not in fields:
        raise MalformedRequest("the form has no `model` field (send it before the file)", field="model")
    fmt = upload_format(content_type=form.file.content_type, filename=form.file.filename)
    version = await jobs.resolve(fields["model"])
    # NOTE: the file is read whole (memory, then disk) before the job's transaction opens: a slow client
    # never holds a database connection, and the body's hash recognises a retried Idempotency-Key.
    digest, chunks = await spooled(form.chunks, fields={**fields, "format": fmt})
    columns = version.signature.feature_names if fmt == "csv" else None
    rows = upload_rows(chunks, fmt=fmt, max_bytes=limit, max_rows=jobs.settings.max_job_rows, columns=columns)
    return Submission(
        tenant=_tenant(request),
        model=fields["model"],
        rows=rows,
        webhook=_decode_field(_webhook, fields, "webhook"),
        completion_window=fields.get("completion_window"),
        metadata=_decode_field(_metadata, fields, "metadata"),
        idempotency_key=key,
        request_sha256=digest if key else None,
        correlation_id=correlation_id,
        version=version,
    )


@get("/v1/jobs/{job_id:str}", guards=_JOBS, summary="A job: status, counts, progress, timestamps", tags=["jobs"],
     responses=_FOUND)  # fmt: skip
async def get_job(request: Request[Any, Any, Any], job_id: FromPath[str], jobs: NamedDependency[JobService]) -> JobView:
    return (await jobs.get(_tenant(request), job_id)).view()


@get("/v1/jobs", guards=_JOBS, summary="Jobs, newest first (cursor-paged)", tags=["jobs"], responses=_LISTED)
async def list_jobs(
    request: Request[Any, Any, Any],
    jobs: NamedDependency[JobService],
    status: FromQuery[JobStatus | None] = None,
    model: FromQuery[str | None] = None,
    created_after: FromQuery[dt.datetime | None] = None,
    created_before: FromQuery[dt.datetime | None] = None,
    cursor: FromQuery[str | None] = None,
    limit: FromQuery[int] = 50,
) -> JobPage:
    records, following = await jobs.list(
        _tenant(request),
        status=status,
        model=model,
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
        limit=limit,
    )
    return JobPage(data=tuple(r.view() for r in records), next_cursor=following)


@post("/v1/jobs/{job_id:str}/cancel", guards=_JOBS, status_code=200,
      summary="Cancel: queued rows skipped, results kept", tags=["jobs"],
      responses={**_FOUND, **problems(409, texts={409: "The job is already finished (job_finished)"})})  # fmt: skip
async def cancel_job(
    request: Request[Any, Any, Any], job_id: FromPath[str], jobs: NamedDependency[JobService]
) -> JobView:
    return (await jobs.cancel(_tenant(request), job_id)).view()


@get("/v1/jobs/{job_id:str}/results", guards=_JOBS, summary="Row results, cursor-paged (status: all|succeeded|failed)",
     tags=["jobs"], responses={**_FOUND, **_LISTED})  # fmt: skip
async def job_results(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    jobs: NamedDependency[JobService],
    cursor: FromQuery[str | None] = None,
    limit: FromQuery[int] = 100,
    status: FromQuery[ResultFilter] = "all",
) -> ResultPage:
    return await jobs.results_page(_tenant(request), job_id, cursor=cursor, limit=limit, which=status)


@get("/v1/jobs/{job_id:str}/results.jsonl", guards=_JOBS, summary="Succeeded rows as JSON Lines (streamed)",
     tags=["jobs"], media_type="application/jsonl", responses=_FOUND)  # fmt: skip
async def results_jsonl(
    request: Request[Any, Any, Any], job_id: FromPath[str], jobs: NamedDependency[JobService]
) -> Stream:
    return Stream(
        _jsonl(await jobs.results(_tenant(request), job_id, which="succeeded")), media_type="application/jsonl"
    )


@get("/v1/jobs/{job_id:str}/errors.jsonl", guards=_JOBS, summary="Failed rows as JSON Lines (streamed)", tags=["jobs"],
     media_type="application/jsonl", responses=_FOUND)  # fmt: skip
async def errors_jsonl(
    request: Request[Any, Any, Any], job_id: FromPath[str], jobs: NamedDependency[JobService]
) -> Stream:
    return Stream(_jsonl(await jobs.results(_tenant(request), job_id, which="failed")), media_type="application/jsonl")


@get("/v1/jobs/{job_id:str}/events", guards=_JOBS,
     summary="Server-Sent Events: the job at every change, until terminal", tags=["jobs"],
     responses=_FOUND, operation_class=JobEventsOperation)  # fmt: skip
async def job_events(
    request: Request[Any, Any, Any], job_id: FromPath[str], jobs: NamedDependency[JobService]
) -> ServerSentEvent:
    updates = jobs.watch(_tenant(request), job_id)
    first = await anext(updates)  # an unknown job is a 404 here, before the stream starts

    async def events() -> AsyncIterator[ServerSentEventMessage]:
        record = first
        yield _event(record)
        async for record in updates:
            yield _event(record)

    return ServerSentEvent(events())


@get(
    "/v1/jobs/{job_id:str}/webhooks",
    guards=_JOBS,
    summary="The job's webhook deliveries and their attempts",
    tags=["jobs"],
    responses=_FOUND,
)
async def job_webhooks(
    request: Request[Any, Any, Any], job_id: FromPath[str], jobs: NamedDependency[JobService]
) -> list[DeliveryView]:
    return await jobs.webhook_log(_tenant(request), job_id)


@post("/v1/jobs/{job_id:str}/webhooks/{delivery_id:str}/replay", guards=_JOBS, status_code=202,
      summary="Deliver a webhook event again (a new series of attempts, same webhook-id)", tags=["jobs"],
      responses=problems(*GUARDED, 400, 404, texts={404: "No such job, or no such delivery of it"}))  # fmt: skip
async def replay_webhook(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    delivery_id: FromPath[str],
    jobs: NamedDependency[JobService],
) -> DeliveryView:
    return await jobs.replay_webhook(_tenant(request), job_id, delivery_id)


@get("/v1/webhooks/secret", guards=_JOBS, summary="This tenant's webhook signing secret (whsec_…), made on first use",
     tags=["webhooks"], responses=problems(*GUARDED))  # fmt: skip
async def webhook_secret(request: Request[Any, Any, Any], jobs: NamedDependency[JobService]) -> WebhookSecret:
    return await jobs.webhook_secret(_tenant(request), rotate=False)


@post("/v1/webhooks/secret/rotate", guards=_JOBS, status_code=200, tags=["webhooks"], responses=problems(*GUARDED),
      summary="A new signing secret; the previous one keeps signing alongside it for a day")  # fmt: skip
async def rotate_webhook_secret(request: Request[Any, Any, Any], jobs: NamedDependency[JobService]) -> WebhookSecret:
    return await jobs.webhook_secret(_tenant(request), rotate=True)


def _tenant(request: Request[Any, Any, Any]) -> str:
    """The authenticated caller's tenant: every job lookup is scoped by it (another's job is a 404)."""
    return principal_of(request.scope).tenant


def _event(record: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=_line.encode(record.view()).decode(), event="job", id=record.status)


async def _jsonl(lines: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    async for line in lines:
        yield _line.encode(line) + b"\n"


def _decode_field(decoder: msgspec.json.Decoder[Any], fields: dict[str, str], name: str) -> Any:
    if name not in fields:
        return None
    try:
        return decoder.decode(fields[name])
    except msgspec.DecodeError as exc:
        raise MalformedRequest(f"form field {name!r}: {exc}", field=name) from None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"a job's body or file is limited to {limit} bytes", max_bytes=limit)


JOB_HANDLERS = [submit_job, get_job, list_jobs, cancel_job, job_results, results_jsonl, errors_jsonl, job_events,
                job_webhooks, replay_webhook, webhook_secret, rotate_webhook_secret]  # fmt: skip
