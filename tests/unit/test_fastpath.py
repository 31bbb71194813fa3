"""The hot predict route in front of the app, and the corked transport under it (no sockets)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from inferq.api.fastpath import FastPredict
from inferq.api.headers import CallLimits
from inferq.api.metrics import Metrics
from inferq.api.protocol import CorkedTransport
from inferq.api.service import Answer, PredictCall
from inferq.contracts.auth import Limits, Principal, Scope
from inferq.contracts.messages import InferResult
from inferq.contracts.predictions import Prediction
from inferq.errors import Overloaded, Unauthenticated


class FakeService:
    def __init__(self, error: Exception | None = None) -> None:
        self.limits = CallLimits()
        self.calls: list[PredictCall] = []
        self._error = error

    async def predict(self, call: PredictCall) -> Answer:
        self.calls.append(call)
        if self._error is not None:
            raise self._error
        result = InferResult(
            id="r1", tenant="default", model="wine", version=2, status="succeeded", predictions=(Prediction(label=1),)
        )
        return Answer("r1", "wine", 2, result, 1.5)


LIMITS = Limits(rate_per_s=10, burst=10, concurrency=10, max_rows=10, max_elements=100)


class FakeAuth:
    """Accepts ``Bearer good`` (scopes from ``scopes``), refuses anything else as the real one does."""

    def __init__(self, scopes: frozenset[Scope] = frozenset({"predict"})) -> None:
        self.scopes = scopes

    async def authenticate(self, headers: Any, address: str) -> Principal:
        if (b"authorization", b"Bearer good") not in headers:
            raise Unauthenticated("invalid, revoked or expired API key")
        return Principal(key_id="k" * 16, tenant="acme", scopes=self.scopes, limits=LIMITS)


GOOD = (b"authorization", b"Bearer good")


class FakeApp:
    """Stands in for the Litestar app: records what it was handed."""

    request_max_body_size = 64

    def __init__(self, service: FakeService, auth: FakeAuth | None = None) -> None:
        services = SimpleNamespace(predictions=service, auth=auth or FakeAuth())
        self.state = SimpleNamespace(metrics=Metrics(), get=lambda key: services)
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        body = message["body"]
        while message.get("more_body"):
            message = await receive()
            body += message["body"]
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(app: FastPredict, path: str, chunks: list[bytes], headers: list[Any] | None = None) -> list[Any]:
    """``headers`` (plus the good key unless they carry an Authorization of their own)."""
    headers = list(headers or [])
    if not any(name == b"authorization" for name, _ in headers):
        headers.append(GOOD)
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_predict_is_served_without_the_app() -> None:
    service = FakeService()
    inner = FakeApp(service)
    sent = await call(FastPredict(inner), "/v1/models/wine@2/predict", [b'{"inputs": ', b"[[1, 2]]}"],
                      headers=[(b"prefer", b"wait=5"), (b"x-request-id", b"abc-1")])  # fmt: skip
    assert inner.bodies == []
    assert [(c.ref.name, c.ref.version) for c in service.calls] == [("wine", 2)]
    assert service.calls[0].wait_s == 5
    assert service.calls[0].correlation_id == "abc-1"
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"x-request-id"] == b"abc-1"
    assert headers[b"preference-applied"] == b"wait=5"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"])["predictions"] == [{"label": 1}]


async def test_domain_errors_are_problem_details_with_retry_after() -> None:
    service = FakeService(Overloaded("partition is full", retry_after_s=3))
    sent = await call(FastPredict(FakeApp(service)), "/v1/models/wine/predict", [b'{"inputs": [[1]]}'])
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 503
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"retry-after"] == b"3"
    problem = json.loads(body["body"])
    assert problem["code"] == "overloaded"
    assert problem["status"] == 503
    assert problem["type"].endswith("overloaded")


async def test_unreadable_and_oversized_bodies_go_to_the_app_whole() -> None:
    service = FakeService()
    inner = FakeApp(service)
    app = FastPredict(inner)
    assert (await call(app, "/v1/models/wine/predict", [b'{"inputs": [[1, ', b"2"]))[0]["status"] == 418
    big = [b'{"inputs": [[' + b"1, " * 20, b"1, " * 20, b"1]]}"]
    assert (await call(app, "/v1/models/wine/predict", big))[0]["status"] == 418
    assert inner.bodies == [b'{"inputs": [[1, 2', b"".join(big)]  # replayed byte for byte, nothing lost
    assert service.calls == []


async def test_other_routes_are_the_apps() -> None:
    service = FakeService()
    inner = FakeApp(service)
    for path in ("/v1/models/wine/versions/2/predict", "/v2/models/wine/infer", "/v1/models/a/b/predict"):
        assert (await call(FastPredict(inner), path, [b'{"inputs": [[1]]}']))[0]["status"] == 418
    assert service.calls == []
    assert len(inner.bodies) == 3


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_corked_transport_writes_once_per_loop_turn_and_flushes_on_close() -> None:
    raw = RecordingTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    corked.write(b"body")
    assert raw.writes == []
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    corked.write(b"last")
    corked.close()
    assert raw.writes[-1] == b"last"
    assert raw.closed
    assert corked.get_extra_info("peername") == "info:peername"


async def test_the_hot_route_authenticates_like_the_guarded_one() -> None:
    service = FakeService()
    missing = await call(FastPredict(FakeApp(service)), "/v1/models/wine/predict", [b'{"inputs": [[1, 2]]}'],
                         headers=[(b"authorization", b"Bearer bad")])  # fmt: skip
    jobs_only = FakeApp(service, FakeAuth(frozenset({"jobs"})))
    forbidden = await call(FastPredict(jobs_only), "/v1/models/wine/predict", [b'{"inputs": [[1, 2]]}'])
    assert service.calls == []  # nothing reached the service
    assert missing[0]["status"] == 401
    assert (b"www-authenticate", b'Bearer realm="inferq"') in missing[0]["headers"]
    assert json.loads(missing[1]["body"])["code"] == "unauthenticated"
    assert forbidden[0]["status"] == 403
    assert json.loads(forbidden[1]["body"])["code"] == "forbidden"


async def test_the_caller_reaches_the_service_with_its_tenant_and_key() -> None:
    service = FakeService()
    await call(FastPredict(FakeApp(service)), "/v1/models/wine/predict", [b'{"inputs": [[1, 2]]}'])
    assert (service.calls[0].principal.tenant, service.calls[0].principal.key_id) == ("acme", "k" * 16)
