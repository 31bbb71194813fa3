"""``GET /metrics`` for the processes without a web framework (the worker supervisor, ``inferq tasks``).

A few lines of asyncio rather than prometheus-client's threaded server: the text is rendered in the
event loop that owns what it reads (the supervisor's children, the task worker's counters), so nothing
is read across threads. One request per connection; anything but ``GET``/``HEAD /metrics`` is a 404/405.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = structlog.get_logger(__name__)

READ_TIMEOUT_S = 5.0
_STATUS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


class MetricsServer:
    """Serves ``render()`` (the exposition text) on ``GET /metrics``."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int | None:
        """The port bound (``start`` with port 0 picks one), or None when not serving."""
        if self._server is None or not self._server.sockets:
            return None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, *, host: str, port: int) -> bool:
        """Listen on ``host:port``; False (logged) when it cannot: metrics never stop the process they watch."""
        try:
            self._server = await asyncio.start_server(self._answer, host, port)
        except OSError as exc:  # in use (two supervisors on one host), or an address not ours
            log.warning("metrics.not_served", host=host, port=port, error=str(exc))
            return False
        log.info("metrics.serving", host=host, port=self.port)
        return True

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=READ_TIMEOUT_S)
            method, _, rest = head.partition(b"\r\n")[0].decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            status, body = self._respond(method, path)
            reply = (
                f"HTTP/1.1 {status} {_STATUS[status]}\r\ncontent-type: "
                f"{CONTENT_TYPE_LATEST if status == 200 else 'text/plain; charset=utf-8'}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode()
            writer.write(reply if method == "HEAD" else reply + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sent no complete request (or left): nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[int, bytes]:
        if path != "/metrics":
            return 404, b"not found: metrics are at /metrics\n"
        if method not in ("GET", "HEAD"):
            return 405, b"GET /metrics\n"
        try:
            return 200, self._render()
        except Exception as exc:  # a bug in a collector: say so, keep serving
            log.exception("metrics.render_failed", error=str(exc))
            return 500, b"metrics could not be rendered\n"


@contextlib.asynccontextmanager
async def served(render: Callable[[], bytes], *, host: str, port: int) -> AsyncIterator[MetricsServer | None]:
    """A ``MetricsServer`` on ``host:port`` while inside; None when ``port`` is 0 (off) or cannot be bound."""
    if port == 0:
        yield None
        return
    server = MetricsServer(render)
    started = await server.start(host=host, port=port)
    try:
        yield server if started else None
    finally:
        await server.aclose()
