"""``inferq jobs submit FILE --model M [--wait]``: upload a JSONL/CSV file as a batch job over HTTP.

The file is streamed (never read whole); with ``--wait`` a progress bar on stderr follows the job's
events until it ends. stdout gets the job as JSON: at submission, or its final state with ``--wait``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from inferq.cli.api_calls import call, problem
from inferq.cli.output import emit, say
from inferq.errors import MalformedRequest

TERMINAL = ("succeeded", "failed", "canceled", "expired")


async def submit(
    *,
    url: str,
    key: str | None,
    file: Path,
    model: str,
    wait: bool,
    idempotency_key: str | None = None,
    webhook: str | None = None,
    completion_window: str | None = None,
) -> int:
    """Submit, optionally wait; exit status 0 when the job (or, without ``--wait``, the submission) succeeded."""
    if not file.is_file():
        raise MalformedRequest(f"no such file: {file}")
    if not key:
        raise MalformedRequest("no API key: pass --key or set INFERQ_API_KEY (a key with the 'jobs' scope)")
    fields = {"model": model}
    if webhook:
        fields["webhook"] = json.dumps({"url": webhook})
    if completion_window:
        fields["completion_window"] = completion_window
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    content_type = "text/csv" if file.suffix.lower() == ".csv" else "application/jsonl"
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=httpx.Timeout(30.0, read=600.0)) as client:
        with file.open("rb") as handle:
            response = await call(
                client, "POST", "/v1/jobs", data=fields, files={"file": (file.name, handle, content_type)},
                headers=headers,
            )  # fmt: skip
        job: dict[str, Any] = response.json()
        say(f"job {job['id']}: {job['counts']['total']} rows ({job['counts']['failed']} rejected), {job['status']}")
        if not wait:
            emit(job)
            return 0
        job = await _follow(client, job)
        emit(job)
        return 0 if job["status"] == "succeeded" else 1


async def _follow(client: httpx.AsyncClient, job: dict[str, Any]) -> dict[str, Any]:
    """Track the job over its SSE stream (reconnecting if it drops) until it is terminal."""
    started = time.monotonic()
    while job["status"] not in TERMINAL:
        try:
            async with client.stream("GET", f"/v1/jobs/{job['id']}/events") as events:
                if events.status_code >= 400:  # refused (401, 403, 404) or throttled (429): never a tight loop
                    await events.aread()
                    error = problem(events)
                    if not error.retryable:
                        raise error
                    await asyncio.sleep(_retry_after(events))
                    continue
                async for line in events.aiter_lines():
                    if line.startswith("data:"):
                        job = json.loads(line[5:])
                        _progress(job, started)
        except httpx.TransportError as exc:
            say(f"\nevents interrupted ({exc}); reconnecting")
            await asyncio.sleep(1.0)
            job = (await call(client, "GET", f"/v1/jobs/{job['id']}")).json()
    sys.stderr.write("\n")
    return job


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "1")
    return min(60.0, max(0.1, float(value))) if value.replace(".", "", 1).isdigit() else 1.0


def _progress(job: dict[str, Any], started: float) -> None:
    counts, width = job["counts"], 30
    filled = int(width * job["progress"])
    done = counts["succeeded"] + counts["failed"]
    rate = done / max(time.monotonic() - started, 1e-3)
    sys.stderr.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{counts['total']} rows "
        f"({counts['failed']} failed) {rate:,.0f} rows/s {job['status']:<9}"
    )
    sys.stderr.flush()
