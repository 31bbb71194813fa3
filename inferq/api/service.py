"""Predictions as a service with no HTTP in it: validate, resolve, admit, enqueue, hold, answer or accept.

A call either ends with the result (the caller's 200) or, when its wait runs out or the process
drains, with the request accepted: a placeholder keeps its result for the long TTL (the 202).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
import structlog

from inferq.api.catalog import ModelCatalog
from inferq.api.headers import CallLimits
from inferq.api.metrics import Metrics
from inferq.api.result_cache import ResultCache
from inferq.api.routing import Route, Router
from inferq.api.shadow import ShadowMirror
from inferq.contracts.auth import Principal
from inferq.contracts.messages import InferRequest, InferResult, OutputForm, Pending, Reply, State, message_encoder
from inferq.contracts.models import ModelRef, ModelVersion
from inferq.contracts.names import Names
from inferq.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InferqError,
    InvalidInput,
    NotFound,
    Overloaded,
    RateLimited,
    ServiceUnavailable,
)
from inferq.inputs import batch_size, encode_tensors, to_feeds
from inferq.settings import QueueSettings
from inferq.streams.connection import UNAVAILABLE
from inferq.streams.partition import Partition
from inferq.streams.producer import Producer, Submission
from inferq.streams.progress import pending_status
from inferq.streams.quotas import Quota
from inferq.streams.replies import ReplyListener
from inferq.streams.results import ResultStore

log = structlog.get_logger(__name__)

_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PredictCall:
    """One caller's prediction request, as the HTTP layer read it."""

    ref: ModelRef
    inputs: Any
    wait_s: float
    ttl_ms: int
    correlation_id: str
    principal: Principal  # the caller: its tenant owns the prediction, its key's quotas apply
    output: OutputForm = "predictions"
    output_names: tuple[str, ...] = ()
    priority: int = 0
    placehold: bool = True  # no result in time: keep a placeholder so the id can be polled (v1's 202)
    running_wait_s: float = 0.0  # after ``wait_s``, hold this much longer if a worker has taken the request
    routing_key: str | None = None  # X-Routing-Key: the same key gets the same version of an alias


@dataclass(frozen=True, slots=True)
class Answer:
    """How a call ended: ``result`` when it finished in time (200), else ``None``: accepted (202)."""

    request_id: str
    model: str
    version: int
    result: InferResult | None
    total_ms: float
    route: Route | None = None  # the served version and any fallback (headers: api/routing.py)
    cached: bool = False  # answered from the result cache (api/result_cache.py): no worker ran it


@dataclass(frozen=True, slots=True)
class Tracked:
    """A prediction looked up by id: its state, and its result once it has one."""

    request_id: str
    status: State
    model: str
    version: int
    result: InferResult | None = None


class PredictionService:
    """The one entry point for v1 predictions; built once per process, around open clients."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        redis: aioredis.Redis,
        producer: Producer,
        listener: ReplyListener,
        results: ResultStore,
        names: Names,
        queue: QueueSettings,
        limits: CallLimits,
        instance: str,
        max_elements: int,
        redis_timeout_s: float,
        metrics: Metrics,
        router: Router,
    ) -> None:
        self._catalog = catalog
        self._router = router
        self._redis = redis
        self._producer = producer
        self._listener = listener
        self._results = results
        self._names = names
        self._queue = queue
        self.limits = limits
        self._reply = Reply(kind="api", name=instance)
        self._max_elements = max_elements
        # NOTE: every Redis call is bounded twice: by the socket timeouts, and here (connect, script
        # load and reply may each take one timeout), so a hung Redis is a 503, never a hang.
        self._bound_s = 2 * redis_timeout_s + 0.5
        self._metrics = metrics
        self._cache = ResultCache(redis, names=names, metrics=metrics, timeout_s=self._bound_s)
        self.shadows = ShadowMirror(
            catalog=catalog, producer=producer, names=names, queue=queue, metrics=metrics, timeout_s=self._bound_s
        )
        self._partitions: dict[tuple[str, int], Partition] = {}
        self._held: set[asyncio.Future[InferResult]] = set()
        self._draining = False

    @property
    def draining(self) -> bool:
        """This process is shutting down: held callers were released, new predictions are refused."""
        return self._draining

    @property
    def held(self) -> int:
        """Callers waiting for a result right now."""
        return len(self._held)

    def drain(self) -> None:
        """Shutting down: refuse new work and answer every waiting caller with a 202 at once."""
        self._draining = True
        for future in list(self._held):
            future.cancel()

    async def route(self, ref: ModelRef, *, routing_key: str | None = None) -> Route:
        """The version a call to ``ref`` would use now: weights (sticky with a key), then fallback."""
        return await self._router.route(ref, key=routing_key)

    async def predict(
        self, call: PredictCall, *, version: ModelVersion | None = None, route: Route | None = None
    ) -> Answer:
        """Validate, enqueue and hold up to ``call.wait_s``; raises domain errors for every rejection.

        ``version``: already resolved by the caller (it validated against that signature), else resolved here.
        """
        started = time.perf_counter()
        if route is None:
            route = Route(version) if version else await self._router.route(call.ref, key=call.routing_key)
        version = route.version
        structlog.contextvars.bind_contextvars(model=version.model, version=version.version)
        message = self._message(call, version)
        if route.fallback_from:  # the worker's prediction log records it
            message = msgspec.structs.replace(message, fallback_from=route.fallback_from)
        message, cached = await self._cache.consult(message, version, caller=call.principal)
        if cached is not None:  # nothing enqueued: the rate quota was spent, no in-flight slot taken
            return self._cached(cached, started, route)
        shadow = await self.shadows.target(call.ref, version)
        if shadow is not None:  # mirrored: both sides of the pair are logged (api/shadow.py)
            message = msgspec.structs.replace(message, logged=True)
        future = self._listener.expect(message.id)  # before the XADD: the reply may beat our await
        self._held.add(future)
        self._metrics.held.inc()
        try:
            part = self._partition(version)
            entry_id = await self._enqueue(part, version, message, call.principal)
            if shadow is not None:
                self.shadows.mirror(message, to=shadow)
            if call.running_wait_s > 0:
                await _hold_while_running(
                    future, call.wait_s, call.running_wait_s, running=lambda: self._delivered(part, entry_id)
                )
            else:
                await _hold(future, call.wait_s)
        finally:
            self._listener.forget(message.id)
            self._held.discard(future)
            self._metrics.held.dec()
        result = future.result() if future.done() and not future.cancelled() else await self._late_result(message.id)
        outcome = result.status if result is not None else "accepted" if call.placehold else "timed_out"
        self._metrics.count_prediction(model=version.model, version=version.version, outcome=outcome)
        if result is not None and result.status == "succeeded":
            seconds = time.perf_counter() - started
            self._metrics.observe_prediction(model=version.model, version=version.version, seconds=seconds)
        if result is None:
            if call.placehold:
                await self._placehold(
                    Pending(
                        id=message.id,
                        tenant=call.principal.tenant,
                        model=version.model,
                        version=version.version,
                        entry_id=entry_id,
                        ttl_ms=call.ttl_ms,
                    )
                )
        elif result.status != "succeeded":
            raise result_error(result)
        return Answer(message.id, version.model, version.version, result, _ms_since(started), route=route)

    def _cached(self, result: InferResult, started: float, route: Route) -> Answer:
        seconds = time.perf_counter() - started
        self._metrics.count_prediction(model=result.model, version=result.version, outcome="succeeded")
        self._metrics.observe_prediction(model=result.model, version=result.version, seconds=seconds)
        return Answer(result.id, result.model, result.version, result, _ms_since(started), route=route, cached=True)

    def _message(self, call: PredictCall, version: ModelVersion) -> InferRequest:
        """The stream message for ``call``, its inputs checked against the version's signature."""
        limits = call.principal.limits
        try:
            feeds = to_feeds(call.inputs, version.signature, max_elements=min(self._max_elements, limits.max_elements))
            rows = batch_size(feeds)
            if rows > limits.max_rows:
                raise InvalidInput(
                    f"{rows} rows in one request; this API key may send at most {limits.max_rows} "
                    "(submit larger inputs as a job)",
                    rows=rows,
                    max_rows=limits.max_rows,
                )
        except InvalidInput:
            self._metrics.count_prediction(model=version.model, version=version.version, outcome="invalid_input")
            raise
        if self._draining:
            raise ServiceUnavailable("this API process is shutting down", retry_after_s=1)
        request_id = os.urandom(16).hex()
        structlog.contextvars.bind_contextvars(prediction_id=request_id)
        return InferRequest(
            id=request_id,
            tenant=call.principal.tenant,
            model=version.model,
            version=version.version,
            inputs=encode_tensors(feeds),
            rows=rows,
            ttl_ms=call.ttl_ms,
            output=call.output,
            output_names=call.output_names,
            priority=call.priority,
            correlation_id=call.correlation_id,
            reply=self._reply,
            key_id=call.principal.key_id,
        )

    async def get_prediction(self, request_id: str, *, tenant: str) -> Tracked:
        """A prediction's state by id; an unknown id, or another tenant's, is ``NotFound``."""
        missing = NotFound(f"prediction {request_id[:64]!r} not found", id=request_id[:64])
        if not _REQUEST_ID.match(request_id):
            raise missing
        stored = await self._bounded(self._results.get(self._names.result(request_id)))
        if stored is None or stored.tenant != tenant:
            raise missing
        if isinstance(stored, InferResult):
            return Tracked(request_id, stored.status, stored.model, stored.version, stored)
        part = self._partitions.get((stored.model, stored.version)) or Partition.of(
            self._names, model=stored.model, version=stored.version
        )
        status, result = await self._bounded(
            pending_status(self._redis, part, key=self._names.result(request_id), pending=stored)
        )
        return Tracked(request_id, status, stored.model, stored.version, result)

    async def _enqueue(self, part: Partition, version: ModelVersion, message: InferRequest, caller: Principal) -> str:
        limit = int(version.overrides.get("admission_limit", self._queue.admission_limit))
        submission = Submission(
            stream=part.work,
            rate_key=part.rate_key,
            limit=limit,
            message=message_encoder.encode(message),
            quota=Quota.of(caller, self._names),
            request_id=message.id,
            ttl_ms=message.ttl_ms,
        )
        try:
            return await self._bounded(self._producer.submit(submission))
        except Overloaded:
            self._metrics.count_prediction(model=version.model, version=version.version, outcome="overloaded")
            raise
        except RateLimited:
            self._metrics.count_prediction(model=version.model, version=version.version, outcome="rate_limited")
            raise
        except ServiceUnavailable:
            self._metrics.count_prediction(model=version.model, version=version.version, outcome="unavailable")
            raise

    async def _late_result(self, request_id: str) -> InferResult | None:
        """Read the result key once: pub/sub is at-most-once, the result may be there unannounced."""
        try:
            stored = await self._bounded(self._results.get(self._names.result(request_id)))
        except ServiceUnavailable as exc:
            log.warning("prediction.result_unreadable", error=exc.message)
            return None
        return stored if isinstance(stored, InferResult) else None

    async def _placehold(self, pending: Pending) -> None:
        try:
            await self._bounded(self._results.placehold(key=self._names.result(pending.id), pending=pending))
        except ServiceUnavailable as exc:
            # The request is enqueued and will run; only its result's long TTL is at risk.
            log.warning("prediction.placeholder_failed", error=exc.message)

    async def _bounded(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._bound_s):  # NOTE: no task per call, unlike wait_for
                return await call
        except TimeoutError as exc:
            raise ServiceUnavailable("redis did not answer in time", retry_after_s=1) from exc
        except UNAVAILABLE as exc:
            raise ServiceUnavailable(f"redis is unavailable: {exc}", retry_after_s=1) from exc

    async def _delivered(self, part: Partition, entry_id: str) -> bool:
        """Whether a worker has taken the entry (delivered, not yet acknowledged): it is running."""
        try:
            found = await self._bounded(
                self._redis.xpending_range(part.work, part.group, min=entry_id, max=entry_id, count=1)
            )
        except (ServiceUnavailable, aioredis.ResponseError):  # no answer, or no group: no worker has it
            return False
        return bool(found)

    def _partition(self, version: ModelVersion) -> Partition:
        key = (version.model, version.version)
        part = self._partitions.get(key)
        if part is None:
            part = self._partitions[key] = Partition.of(self._names, model=version.model, version=version.version)
        return part


async def _hold(future: asyncio.Future[InferResult], wait_s: float) -> None:
    """Wait up to ``wait_s`` for ``future``; it is cancelled when the time runs out (or on drain).

    NOTE: a timer that cancels the future costs less than ``asyncio.wait``/``wait_for`` per call;
    a cancellation of this task itself (client gone, shutdown) still propagates.
    """
    if wait_s <= 0 or future.done():
        return
    timer = asyncio.get_running_loop().call_later(wait_s, future.cancel)
    try:
        await future
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    finally:
        timer.cancel()


async def _hold_while_running(
    future: asyncio.Future[InferResult], wait_s: float, running_wait_s: float, *, running: Callable[[], Awaitable[bool]]
) -> None:
    """Wait up to ``wait_s``, then up to ``running_wait_s`` more if ``running()`` says a worker has the request.

    NOTE: ``asyncio.wait`` leaves the future alone at the timeout (``_hold``'s timer cancels it).
    """
    if not future.done() and wait_s > 0:
        await asyncio.wait((future,), timeout=wait_s)
    if not future.done() and await running():
        await asyncio.wait((future,), timeout=running_wait_s)


def result_error(result: InferResult) -> InferqError:
    """The domain error a finished-but-unsuccessful result stands for (its id in the details)."""
    if result.status == "expired":
        return DeadlineExceeded("the deadline (Cancel-After) passed before the prediction could start", id=result.id)
    if result.status == "failed" and result.error is not None:
        error = result.error.to_exception()
        error.details.setdefault("id", result.id)
        return error
    if result.status == "dead_lettered":
        return InferenceFailed("the prediction failed on every delivery and was dead-lettered", id=result.id)
    return InferenceFailed(f"the prediction ended {result.status}", id=result.id)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
