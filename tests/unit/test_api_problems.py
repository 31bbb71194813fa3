"""The one error → HTTP mapping: statuses, codes, Retry-After, and no internals in a 500."""

from __future__ import annotations

import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromPath

from inferq.api.problems import problem_details_plugin
from inferq.errors import (
    AliasNotFound,
    Conflict,
    DeadlineExceeded,
    InferenceFailed,
    InferqError,
    InvalidInput,
    MalformedRequest,
    ModelLoadFailed,
    ModelNotFound,
    Overloaded,
    ServiceUnavailable,
    VersionNotFound,
)

RAISED: dict[str, Exception] = {}


@get("/raise/{name:str}")
async def raising(name: FromPath[str]) -> None:
    raise RAISED[name]


APP = Litestar([raising], plugins=[problem_details_plugin()], logging_config=None)


async def _problem(error: Exception) -> httpx.Response:
    RAISED["it"] = error
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://t") as client:
        return await client.get("/raise/it")


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (InvalidInput("row 0: bad", row=0, field="a"), 422, None),
        (MalformedRequest("bad header", header="Prefer"), 400, None),
        (ModelNotFound("no model"), 404, None),
        (VersionNotFound("no version"), 404, None),
        (AliasNotFound("no alias"), 404, None),
        (Conflict("exists"), 409, None),
        (Overloaded("full", retry_after_s=7, backlog=10, limit=10), 503, "7"),
        (ServiceUnavailable("redis down"), 503, "1"),
        (ModelLoadFailed("cannot load"), 503, "1"),
        (DeadlineExceeded("too late", id="x"), 504, None),
        (InferenceFailed("crashed", id="x"), 500, None),
    ],
)
async def test_domain_errors_map_to_their_status_with_the_code(
    error: InferqError, status: int, retry_after: str | None
) -> None:
    response = await _problem(error)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers.get("Retry-After") == retry_after
    body = response.json()
    assert body["code"] == error.code
    assert body["type"] == f"urn:inferq:problem:{error.code}"
    assert body["status"] == status
    assert body["detail"] == error.message
    assert body.get("details", {}) == error.details


async def test_an_unexpected_exception_is_a_500_without_its_message() -> None:
    response = await _problem(RuntimeError("password=hunter2 at /srv/secret.py line 3"))
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "internal_error"
    assert "hunter2" not in response.text
    assert "secret" not in response.text
