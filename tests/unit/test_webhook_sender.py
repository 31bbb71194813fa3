"""The sender without sockets: what it asks httpx for (checked IP, Host, SNI) and how answers become outcomes."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from inferq.webhooks.sender import AttemptOutcome, send

NAMES = {
    "hooks.example.com": ["93.184.216.34", "2606:2800::1"],
    "rebind.example.com": ["93.184.216.34", "192.168.0.10"],
}
Handler = Callable[[httpx.Request], httpx.Response]


def answer(status: int, body: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    """A streamed response, as a real transport returns it (``text=`` would arrive already read)."""
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body.encode()))


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in NAMES:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in NAMES[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


async def attempt(handler: Handler, url: str, seen: list[httpx.Request], **kwargs: Any) -> AttemptOutcome:
    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    options: dict[str, Any] = {"timeout_s": 5.0, "allow_private": False, **kwargs}
    async with httpx.AsyncClient(transport=httpx.MockTransport(recording)) as client:
        return await send(client, url=url, body=b'{"a":1}', headers={"webhook-id": "msg_1", "Host": "evil"}, **options)


async def test_https_goes_to_the_checked_ip_with_the_real_host_and_sni() -> None:
    seen: list[httpx.Request] = []
    outcome = await attempt(lambda _: answer(204), "https://hooks.example.com/in?team=7", seen)
    assert outcome.ok
    assert outcome.error is None
    assert outcome.status == 204
    [request] = seen
    assert str(request.url) == "https://93.184.216.34/in?team=7"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.headers["connection"] == "close"
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["webhook-id"] == "msg_1"
    assert request.content == b'{"a":1}'


async def test_http_keeps_the_port_in_host_and_sends_no_sni() -> None:
    seen: list[httpx.Request] = []
    await attempt(lambda _: answer(200), "http://hooks.example.com:8080/", seen)
    [request] = seen
    assert str(request.url) == "http://93.184.216.34:8080/"
    assert request.headers["host"] == "hooks.example.com:8080"
    assert "sni_hostname" not in request.extensions
    assert request.headers["connection"] == "keep-alive"


async def test_a_refused_connection_moves_on_to_the_next_checked_address() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "93.184.216.34":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return answer(200)

    seen: list[httpx.Request] = []
    outcome = await attempt(handler, "https://hooks.example.com/", seen)
    assert outcome.ok
    assert [str(r.url) for r in seen] == ["https://93.184.216.34/", "https://[2606:2800::1]/"]


async def test_one_private_address_among_public_ones_means_no_request_at_all() -> None:
    seen: list[httpx.Request] = []
    outcome = await attempt(lambda _: answer(200), "http://rebind.example.com/", seen)
    assert seen == []
    assert outcome.status is None
    assert not outcome.ok
    assert outcome.error == (
        "unsafe address: webhook URL host rebind.example.com resolves to 192.168.0.10, which is a private address"
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (answer(200, "thanks"), AttemptOutcome(status=200, ok=True, excerpt="thanks")),
        (answer(500, "oops", {"retry-after": "30"}),
         AttemptOutcome(status=500, retry_after_s=30.0, error="HTTP 500", excerpt="oops")),
        (answer(429, headers={"retry-after": "120"}),
         AttemptOutcome(status=429, retry_after_s=120.0, error="HTTP 429")),
        (answer(410, "gone"), AttemptOutcome(status=410, gone=True, error="HTTP 410", excerpt="gone")),
        (answer(301, headers={"location": "http://127.0.0.1/"}),
         AttemptOutcome(status=301, error="redirect refused")),
        (answer(307, headers={"location": "/elsewhere"}), AttemptOutcome(status=307, error="redirect refused")),
        (answer(400, "é" * 1000), AttemptOutcome(status=400, error="HTTP 400", excerpt="é" * 256)),
    ],
)  # fmt: skip
async def test_answers_become_outcomes(response: httpx.Response, expected: AttemptOutcome) -> None:
    seen: list[httpx.Request] = []
    outcome = await attempt(lambda _: response, "https://hooks.example.com/", seen)
    assert outcome.duration_ms >= 0
    assert msgspec.structs.replace(outcome, duration_ms=0.0) == expected
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ReadTimeout("read timed out"), "timeout"),
        (httpx.ConnectTimeout("connect timed out"), "timeout"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "connection failed: [Errno 111] Connection refused"),
        (httpx.RemoteProtocolError("peer closed connection"), "RemoteProtocolError: peer closed connection"),
    ],
)
async def test_transport_errors_become_outcomes(error: Exception, expected: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    outcome = await attempt(handler, "http://93.184.216.34/", [])
    assert outcome.error == expected
    assert outcome.status is None
    assert not outcome.ok


async def test_unknown_names_and_bad_urls_become_outcomes() -> None:
    seen: list[httpx.Request] = []
    unknown = await attempt(lambda _: answer(200), "https://nowhere.example.com/", seen)
    assert unknown.error == "name resolution failed: Name or service not known"
    bad = await attempt(lambda _: answer(200), "ftp://hooks.example.com/", seen)
    assert bad.error == "unsafe address: webhook URL must use http or https, not 'ftp'"
    assert seen == []


@pytest.mark.parametrize(("asked_s", "used_s"), [(60.0, 15.0), (15.0, 15.0), (2.5, 2.5)])
async def test_the_request_timeout_is_at_most_fifteen_seconds(asked_s: float, used_s: float) -> None:
    seen: list[httpx.Request] = []
    await attempt(lambda _: answer(200), "http://93.184.216.34/", seen, timeout_s=asked_s)
    assert seen[0].extensions["timeout"] == {"connect": used_s, "read": used_s, "write": used_s, "pool": used_s}
