"""One HTTP call of the CLI to the inferq API: a transport failure or a problem-details answer becomes the
domain error its ``code`` names (``inferq jobs …`` and ``inferq models upload|promote|rollback|archive``)."""

from __future__ import annotations

from typing import Any

import httpx

from inferq.errors import InferqError, ServiceUnavailable, error_class


async def call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """The response of a 1xx-3xx answer; else the error it describes."""
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise ServiceUnavailable(f"cannot reach the inferq API at {client.base_url}: {exc}") from exc
    if response.status_code >= 400:
        raise problem(response)
    return response


def problem(response: httpx.Response) -> InferqError:
    """The domain error a problem-details response names (its ``code``), with its ``detail`` as the message."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code", "internal_error"))
    details: dict[str, Any] = body["details"] if isinstance(body.get("details"), dict) else {}
    message = str(body.get("detail") or response.text[:200] or f"HTTP {response.status_code}")
    return error_class(code)(message, **{**details, "status": response.status_code})
