"""uvicorn's httptools protocol with each response written in one system call.

uvicorn writes a response's head when the app sends ``http.response.start`` and its body on
``http.response.body``: two ``write`` calls, each costing ~25 µs of kernel time on the machines we
measure, about a tenth of the API's CPU per prediction (docs/architecture.md, "The hot route").
Here writes made during one event-loop turn are joined and written once at the end of the turn,
so a response's head and body — and several pipelined responses — leave in one ``write``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """A transport proxy that buffers ``write`` until the end of the loop turn (``close`` flushes first)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(bytes(data))

    def flush(self) -> None:
        """Write what is buffered, in one call."""
        if not self._buffer:
            return
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=CorkedHttpToolsProtocol)``: httptools, one ``write`` per loop turn."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
