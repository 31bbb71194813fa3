"""Webhook attempts against a real HTTP receiver on 127.0.0.1: retries, hangs, 410, redirects, big bodies, SSRF."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from inferq.settings import JobsSettings
from inferq.webhooks.schedule import next_delay
from inferq.webhooks.sender import AttemptOutcome, new_client, send
from inferq.webhooks.signatures import headers, new_secret

pytestmark = pytest.mark.integration

SECRET = new_secret()
PAYLOAD = {"type": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z", "data": {"id": "job_1", "rows": 3}}
BODY = json.dumps(PAYLOAD).encode()


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """What the receiver does with one request: answer, hang until the test ends, or hang up."""

    status: int = 200
    headers: dict[str, str] = {}
    body: bytes = b""
    hang: bool = False
    hang_up: bool = False

    def encode(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} Status", f"content-length: {len(self.body)}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


class Received(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A small HTTP/1.1 server on 127.0.0.1 that answers requests with scripted replies (then 200s)."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[Received] = []
        self.connections = 0
        self._released = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._released.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while not reader.at_eof():
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                fields = dict(line.split(":", 1) for line in head[1:] if line)
                sent = {name.strip().lower(): value.strip() for name, value in fields.items()}
                body = await reader.readexactly(int(sent.get("content-length", "0")))
                self.requests.append(Received(method=method, target=target, headers=sent, body=body))
                reply = self.replies.pop(0) if self.replies else Reply()
                if reply.hang:
                    await self._released.wait()
                if reply.hang_up or reply.hang:
                    return
                writer.write(reply.encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def signed(msg_id: str = "msg_1") -> dict[str, str]:
    return headers([SECRET], msg_id=msg_id, timestamp=int(time.time()), body=BODY)


async def attempt(url: str, *, timeout_s: float = 5.0, allow_private: bool = True) -> AttemptOutcome:
    return await send(None, url=url, body=BODY, headers=signed(), timeout_s=timeout_s, allow_private=allow_private)


async def test_500_three_times_then_200_is_delivered_on_the_fourth_attempt(receiver: Receiver) -> None:
    down = Reply(status=500, headers={"set-cookie": "sid=abc; Path=/"}, body=b"down")
    receiver.replies = [down, down, down, Reply(status=200, body=b"ok")]
    jobs = JobsSettings(webhook_retry_scale=0.0001)  # the whole schedule in milliseconds
    outcomes: list[AttemptOutcome] = []
    async with asyncio.timeout(10), new_client() as client:
        for attempt_no in range(1, jobs.webhook_max_attempts + 1):
            outcome = await send(client, url=receiver.url("/hook"), body=BODY, headers=signed("msg_retry"),
                                 timeout_s=jobs.webhook_timeout_s, allow_private=True)  # fmt: skip
            outcomes.append(outcome)
            delay = next_delay(attempt_no, scale=jobs.webhook_retry_scale, max_attempts=jobs.webhook_max_attempts)
            if outcome.ok or delay is None:
                break
            await asyncio.sleep(delay)
    assert [(o.status, o.ok, o.gone, o.error, o.excerpt) for o in outcomes] == [
        (500, False, False, "HTTP 500", "down"),
        (500, False, False, "HTTP 500", "down"),
        (500, False, False, "HTTP 500", "down"),
        (200, True, False, None, "ok"),
    ]
    assert len(receiver.requests) == 4
    assert {request.headers["webhook-id"] for request in receiver.requests} == {"msg_retry"}
    assert not any("cookie" in request.headers for request in receiver.requests)  # no cookie jar across receivers
    last = receiver.requests[-1]
    assert Webhook(SECRET).verify(last.body, last.headers) == PAYLOAD


async def test_a_hanging_receiver_times_out(receiver: Receiver) -> None:
    receiver.replies = [Reply(hang=True)]
    async with asyncio.timeout(5):
        outcome = await attempt(receiver.url("/hook"), timeout_s=0.5)
    assert outcome.error == "timeout"
    assert outcome.status is None
    assert not outcome.ok
    assert 450 <= outcome.duration_ms < 2_000
    assert len(receiver.requests) == 1


async def test_410_marks_the_endpoint_gone(receiver: Receiver) -> None:
    receiver.replies = [Reply(status=410, body=b"endpoint removed")]
    outcome = await attempt(receiver.url("/hook"))
    assert (outcome.status, outcome.ok, outcome.gone, outcome.error) == (410, False, True, "HTTP 410")
    assert outcome.excerpt == "endpoint removed"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("location", ["http://127.0.0.1:{port}/elsewhere", "http://169.254.169.254/latest/meta-data/"])
async def test_redirects_are_failures_and_never_followed(receiver: Receiver, status: int, location: str) -> None:
    receiver.replies = [Reply(status=status, headers={"location": location.format(port=receiver.port)})]
    outcome = await attempt(receiver.url("/hook"))
    assert (outcome.status, outcome.ok, outcome.gone, outcome.error) == (status, False, False, "redirect refused")
    assert [request.target for request in receiver.requests] == ["/hook"]


async def test_a_huge_response_body_leaves_only_a_short_excerpt(receiver: Receiver) -> None:
    receiver.replies = [Reply(status=200, body=b"x" * 4_000_000)]
    outcome = await attempt(receiver.url("/hook"))
    assert outcome.ok
    assert outcome.excerpt == "x" * 256


async def test_the_received_request_verifies_with_standardwebhooks(receiver: Receiver) -> None:
    outcome = await attempt(receiver.url("/hook?team=7"))
    assert outcome.ok
    [request] = receiver.requests
    assert (request.method, request.target) == ("POST", "/hook?team=7")
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "inferq-webhooks"
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.body == BODY
    assert Webhook(SECRET).verify(request.body, request.headers) == PAYLOAD
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b"3", b"4"), request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)


async def test_a_name_is_connected_through_its_checked_address_with_the_real_host(receiver: Receiver) -> None:
    outcome = await attempt(receiver.url("/hook", host="localhost"))
    assert outcome.ok, outcome.error
    [request] = receiver.requests
    assert request.headers["host"] == f"localhost:{receiver.port}"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "[::ffff:127.0.0.1]"])
async def test_loopback_is_refused_without_a_connection_unless_allowed(receiver: Receiver, host: str) -> None:
    outcome = await attempt(receiver.url("/hook", host=host), allow_private=False)
    assert outcome.status is None
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.startswith("unsafe address: webhook URL host ")
    assert receiver.connections == 0
    assert receiver.requests == []


async def test_retry_after_is_reported_and_raises_the_next_wait(receiver: Receiver) -> None:
    receiver.replies = [Reply(status=503, headers={"retry-after": "120"})]
    outcome = await attempt(receiver.url("/hook"))
    assert (outcome.status, outcome.error, outcome.retry_after_s) == (503, "HTTP 503", 120.0)
    wait = next_delay(1, scale=1.0, max_attempts=8, retry_after=outcome.retry_after_s, jitter=0.0)
    assert wait == 120.0


async def test_a_receiver_that_hangs_up_is_a_failed_attempt(receiver: Receiver) -> None:
    receiver.replies = [Reply(hang_up=True)]
    outcome = await attempt(receiver.url("/hook"))
    assert outcome.status is None
    assert outcome.error == "RemoteProtocolError: Server disconnected without sending a response."


async def test_a_closed_port_is_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = await attempt(f"http://127.0.0.1:{port}/hook")
    assert (outcome.status, outcome.ok, outcome.error) == (None, False, "connection refused")
