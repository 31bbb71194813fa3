"""The ``/metrics`` server of the worker supervisor and ``inferq tasks`` (``observability/exposition.py``) over
real sockets on 127.0.0.1: what it answers, and what it does with bad requests, a bad collector, a taken port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from inferq.observability.exposition import MetricsServer, served


class Text:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self) -> bytes:
        self.calls += 1
        if self.fail:
            raise RuntimeError("a collector's bug")
        return f"# TYPE x counter\nx_total {self.calls}.0\n".encode()


@pytest.fixture
async def server() -> AsyncIterator[tuple[MetricsServer, Text]]:
    render = Text()
    metrics = MetricsServer(render)
    assert await metrics.start(host="127.0.0.1", port=0)
    yield metrics, render
    await metrics.aclose()


async def raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return answer


async def test_get_metrics_renders_on_each_scrape(server: tuple[MetricsServer, Text]) -> None:
    metrics, render = server
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics.port}") as client:
        first, second = await client.get("/metrics"), await client.get("/metrics?name[]=x")
        head = await client.head("/metrics")
    assert (first.status_code, first.text) == (200, "# TYPE x counter\nx_total 1.0\n")
    assert first.headers["content-type"].startswith("text/plain; version=")
    assert second.text.endswith("x_total 2.0\n")
    assert (head.status_code, head.content, int(head.headers["content-length"])) == (200, b"", len(first.content))
    assert render.calls == 3


async def test_other_paths_and_methods_are_refused_without_rendering(server: tuple[MetricsServer, Text]) -> None:
    metrics, render = server
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics.port}") as client:
        statuses = [(await client.get("/")).status_code, (await client.get("/metricsx")).status_code,
                    (await client.post("/metrics")).status_code]  # fmt: skip
    assert statuses == [404, 404, 405]
    assert render.calls == 0


async def test_garbage_and_half_requests_do_not_stop_it(server: tuple[MetricsServer, Text]) -> None:
    metrics, render = server
    assert metrics.port is not None
    assert (await raw(metrics.port, b"\x00\xff garbage\r\n\r\n")).startswith(b"HTTP/1.1 404")
    _, writer = await asyncio.open_connection("127.0.0.1", metrics.port)
    writer.write(b"GET /metr")  # and leaves
    writer.close()
    assert (await raw(metrics.port, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
    assert render.calls == 1


async def test_a_failing_collector_is_a_500_and_the_next_scrape_works(server: tuple[MetricsServer, Text]) -> None:
    metrics, render = server
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics.port}") as client:
        render.fail = True
        failed = await client.get("/metrics")
        render.fail = False
        recovered = await client.get("/metrics")
    assert failed.status_code == 500
    assert (recovered.status_code, recovered.text.splitlines()[-1]) == (200, "x_total 2.0")


async def test_a_taken_port_is_no_server_and_no_error(server: tuple[MetricsServer, Text]) -> None:
    taken, _ = server
    assert taken.port is not None
    async with served(Text(), host="127.0.0.1", port=taken.port) as second:
        assert second is None  # logged; the process it watches goes on
    async with served(Text(), host="127.0.0.1", port=0) as off:
        assert off is None  # port 0 in settings means off, not "any port"


async def test_closing_stops_listening(server: tuple[MetricsServer, Text]) -> None:
    metrics, _ = server
    port = metrics.port
    assert port is not None
    await metrics.aclose()
    assert metrics.port is None
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
