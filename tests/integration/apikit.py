"""Helpers for the API tests: the app driven in-process, and a stand-in worker answering its stream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from litestar import Litestar

from inferq.api import FastPredict, create_app
from inferq.api.service import PredictionService
from inferq.contracts.auth import SCOPES, Scope, TenantLimits
from inferq.contracts.messages import InferRequest, InferResult, Timings, request_decoder
from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.contracts.names import Names
from inferq.contracts.predictions import Prediction
from inferq.errors import ServiceUnavailable
from inferq.inputs import decode_tensors
from inferq.settings import Settings
from inferq.store.keys import KeyStore
from inferq.streams.consumer import Entry, ack, ensure_groups, read
from inferq.streams.partition import Partition
from inferq.streams.producer import enqueued_ms
from inferq.streams.results import ResultStore, ResultTTL, encode_result

FEATURES = ("a", "b", "c", "d")
SIGNATURE = ModelSignature(
    inputs=(TensorSpec(name="X", dtype="float32", shape=(None, 4)),),
    outputs=(
        TensorSpec(name="label", dtype="int64", shape=(None,)),
        TensorSpec(name="probabilities", dtype="float32", shape=(None, 3)),
    ),
    task="classifier",
    feature_names=FEATURES,
    classes=(0, 1, 2),
    class_names=("setosa", "versicolor", "virginica"),
    label_output="label",
    probabilities_output="probabilities",
)


def tuned(settings: Settings, **changes: Any) -> Settings:
    """The run's settings with short waits, a fast catalog, and ``changes`` (``section__field=value``)."""
    sections: dict[str, dict[str, Any]] = {
        "queue": {"wait_default_s": 2.0, "wait_max_s": 5.0},
        "api": {"catalog_refresh_s": 0.5, "catalog_miss_refresh_s": 0.05},
        "services": {},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        sections[section][name] = value
    return msgspec.structs.replace(
        settings,
        queue=msgspec.structs.replace(settings.queue, **sections["queue"]),
        api=msgspec.structs.replace(settings.api, **sections["api"]),
        services=msgspec.structs.replace(settings.services, **sections["services"]),
    )


@dataclass
class Api:
    """A running app and an HTTP client bound to it (same event loop, no sockets)."""

    app: Litestar
    client: httpx.AsyncClient  # sends ``key`` (tenant ``default``, every scope)
    settings: Settings
    key: str

    async def key_for(self, tenant: str, *scopes: Scope, **limits: Any) -> str:
        """A new key for ``tenant`` with ``scopes`` (all when none); ``limits``: the tenant's own."""
        keys: KeyStore = self.app.state.services.keys
        if limits:
            await keys.set_limits(tenant, TenantLimits(**limits))
        return (await keys.create(tenant=tenant, scopes=scopes or SCOPES)).key

    def as_key(self, key: str) -> httpx.AsyncClient:
        """Another client on the same app, sending ``key`` (close it, or use ``async with``)."""
        return httpx.AsyncClient(
            transport=self.client._transport, base_url="http://api", timeout=30, headers=bearer(key)
        )

    @property
    def service(self) -> PredictionService:
        service: PredictionService = self.app.state.services.predictions
        return service

    def work_stream(self, model: str, version: int) -> str:
        names = Names(self.settings.services.key_prefix)
        return names.work_stream(names.partition(model, version))

    def result_key(self, request_id: str) -> str:
        return Names(self.settings.services.key_prefix).result(request_id)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Api]:
    """The app with its lifespan, driven through httpx's ASGI transport.

    NOTE: the transport gets the app itself, not ``LifespanManager.app``: asgi-lifespan 2.1 hands
    every request the *same* state dict, where Litestar caches each request's parsed body, so the
    second request would see the first one's body.
    """
    app = create_app(settings)
    async with LifespanManager(app):
        key = await _default_key(app)
        transport = httpx.ASGITransport(app=FastPredict(app))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", timeout=30, headers=bearer(key)
        ) as client:
            yield Api(app=app, client=client, settings=settings, key=key)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _default_key(app: Litestar) -> str:
    """A key for the ``default`` tenant with every scope (one per app; the database outlives it)."""
    services = app.state.services
    try:
        return (await services.keys.create(tenant="default", scopes=SCOPES, name="tests")).key
    except ServiceUnavailable:  # tests of a down Postgres: requests fail before any key is checked
        return "iq_" + "0" * 16 + "_" + "0" * 48


Answer = Callable[[InferRequest, Entry], InferResult]


def classify(request: InferRequest, entry: Entry) -> InferResult:
    """A fake classifier: label = int(sum of the row) % 3, with the queue time measured from the entry id."""
    (features,) = decode_tensors(request.inputs).values()
    names = SIGNATURE.class_names or ()
    predictions = []
    for row in features.tolist():
        label = int(sum(row)) % 3
        probabilities = {name: (1.0 if i == label else 0.0) for i, name in enumerate(names)}
        predictions.append(Prediction(label=label, class_name=names[label], probabilities=probabilities))
    return InferResult(
        id=request.id,
        tenant=request.tenant,
        model=request.model,
        version=request.version,
        status="succeeded",
        predictions=tuple(predictions),
        timings=Timings(
            queue_ms=max(0.0, time.time() * 1000 - enqueued_ms(entry.id)), inference_ms=0.25, batch_rows=request.rows
        ),
        correlation_id=request.correlation_id,
    )


@dataclass
class Responder:
    """Stands in for ``inferq.workers`` on one partition: read, answer, store + publish, ack + delete."""

    redis: aioredis.Redis
    settings: Settings
    model: str
    version: int
    answer: Answer = classify
    seen: list[InferRequest] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Responder:
        names = Names(self.settings.services.key_prefix)
        self._part = Partition.of(names, model=self.model, version=self.version)
        self._names = names
        queue = self.settings.queue
        self._store = ResultStore(self.redis, ttl=ResultTTL(long=queue.result_ttl_s, short=round(2 * queue.wait_max_s)))
        await ensure_groups(self.redis, self._part)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            entries = await read(self.redis, self._part, consumer="responder", count=64, block_ms=50)
            if not entries:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for entry in entries:
                request = request_decoder.decode(entry.message)
                self.seen.append(request)
                channel = self._names.reply_channel(request.reply.name) if request.reply else None
                result = encode_result(self.answer(request, entry))
                self._store.store(pipe, key=self._names.result(request.id), value=result, channel=channel)
            ack(pipe, self._part, entries)
            await pipe.execute()


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()


async def register_model(registry: Any, name: str, *, overrides: dict[str, int | float] | None = None) -> None:
    """``name`` with version 1 (the ``default`` alias) and version 2 (the ``prod`` alias)."""
    await registry.register(name=name, model=b"model-v1", signature=SIGNATURE, overrides=overrides)
    await registry.register(name=name, model=b"model-v2", signature=SIGNATURE, aliases=["prod"], overrides=overrides)
