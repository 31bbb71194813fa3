"""``AdminClient``: the model-management routes of the HTTP API, for the CLI (problems become domain errors)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from inferq.cli.api_calls import call

# NOTE: an upload's answer comes after the server's validator child (INFERQ_MODEL_VALIDATE_TIMEOUT_S, 120 s).
TIMEOUT = httpx.Timeout(30.0, read=600.0, write=600.0)


class AdminClient:
    """One HTTP client bound to the API's base URL and an admin key."""

    def __init__(self, url: str, *, key: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        self._client = httpx.AsyncClient(base_url=url, headers=headers, timeout=TIMEOUT, transport=transport)

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.aclose()

    async def upload(self, name: str, file: Path, fields: dict[str, str]) -> dict[str, Any]:
        """``POST /v1/models/{name}/versions``: the fields, then the file (streamed from disk)."""
        with file.open("rb") as handle:
            files = {"file": (file.name, handle, "application/octet-stream")}
            return await self._call("POST", f"{_model(name)}/versions", data=fields, files=files)

    async def get_alias(self, name: str, alias: str) -> dict[str, Any]:
        return await self._call("GET", f"{_model(name)}/aliases/{quote(alias, safe='')}")

    async def put_alias(self, name: str, alias: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PUT", f"{_model(name)}/aliases/{quote(alias, safe='')}", json=body)

    async def patch_version(self, name: str, version: int, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", f"{_model(name)}/versions/{version}", json=body)

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = (await call(self._client, method, path, **kwargs)).json()
        return body


def _model(name: str) -> str:
    return f"/v1/models/{quote(name, safe='')}"
