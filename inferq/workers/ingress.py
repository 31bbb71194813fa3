"""The ingress forwarder: direct producers' entries → validated, tenant-mapped, admitted work.

Producers XADD ``IngressRequest`` messages to ``{prefix}:ingress:{producer}``. The forwarder reads
them with its own group, checks them like the API checks HTTP bodies, and forwards each as an
``InferRequest`` whose id is ``{producer}:{entry id}`` — the dedupe key makes a re-forward after a
crash a no-op. Invalid entries are dead-lettered with a reason and answered with a ``failed``
result on the producer's reply stream; a full partition leaves the entry pending and pauses the
producer (its ingress stream is the buffer).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.ingress import IngressRequest, ingress_decoder
from inferq.contracts.messages import InferRequest, InferResult, Reply, message_encoder
from inferq.contracts.models import ModelRef, ModelVersion
from inferq.contracts.names import Names
from inferq.errors import InferqError, InvalidInput, Overloaded
from inferq.inputs import batch_size, check_feeds, decode_tensors, encode_tensors, to_feeds
from inferq.streams.connection import UNAVAILABLE
from inferq.streams.partition import Partition

log = structlog.get_logger(__name__)

GROUP = "forwarder"
Resolve = Callable[[ModelRef], Awaitable[ModelVersion]]

# KEYS[1] work stream, KEYS[2] rate key, KEYS[3] dedupe key; ARGV[1] limit, ARGV[2] message, ARGV[3] dedupe TTL s.
# Returns the entry id (new or the one forwarded before), or {backlog, rate} when the partition is full.
FORWARD = """
local seen = redis.call('GET', KEYS[3])
if seen then return seen end
local backlog = redis.call('XLEN', KEYS[1])
if backlog >= tonumber(ARGV[1]) then
  return {backlog, redis.call('GET', KEYS[2]) or '0'}
end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
redis.call('SET', KEYS[3], id, 'EX', ARGV[3])
return id
"""


@dataclass(frozen=True, slots=True)
class Forwarding:
    """Forwarder knobs (from QueueSettings and the producer map)."""

    producers: Mapping[str, str]  # producer name → tenant
    admission_limit: int
    deadline_default_ms: int
    max_elements: int
    block_ms: int = 1000
    batch: int = 64
    dedupe_ttl_s: int = 86_400
    reclaim_min_idle_ms: int = 30_000


def request_id(producer: str, entry_id: str) -> str:
    """The id of a forwarded request: stable across re-forwards of the same ingress entry."""
    return f"{producer}:{entry_id}"


def build_request(
    raw: bytes, *, producer: str, tenant: str, entry_id: str, version: ModelVersion, options: Forwarding
) -> tuple[IngressRequest, InferRequest]:
    """Validate one decoded ingress message against its model and build the work message."""
    request = ingress_decoder.decode(raw)
    if request.tensors:
        feeds = check_feeds(decode_tensors(request.tensors), version.signature, max_elements=options.max_elements)
    elif request.inputs is not None:
        feeds = to_feeds(request.inputs, version.signature, max_elements=options.max_elements)
    else:
        raise InvalidInput("the message has neither inputs nor tensors", field="inputs")
    ttl_ms = request.ttl_ms if request.ttl_ms is not None else options.deadline_default_ms
    if ttl_ms <= 0:
        raise InvalidInput("ttl_ms must be positive", field="ttl_ms")
    # NOTE: a new message, field by field: what only trusted code sets (cache_key and cache_ttl_ms, shadow_of,
    # logged, fallback_from, key_id, job) never comes from a producer, whatever its entry holds; a producer
    # naming a cache key could otherwise put its outputs under other tenants' inputs.
    work = InferRequest(
        id=request_id(producer, entry_id),
        tenant=tenant,
        model=version.model,
        version=version.version,
        inputs=encode_tensors(feeds),
        rows=batch_size(feeds),
        ttl_ms=ttl_ms,
        output=request.output,
        output_names=request.output_names,
        priority=request.priority,
        correlation_id=request.correlation_id or request_id(producer, entry_id),
        reply=Reply(kind="producer", name=producer),
    )
    return request, work


class Forwarder:
    """Reads every configured producer's ingress stream and forwards valid entries."""

    def __init__(self, redis: aioredis.Redis, *, names: Names, resolve: Resolve, options: Forwarding) -> None:
        self._redis = redis
        self._names = names
        self._resolve = resolve
        self._options = options
        self.consumer = f"{socket.gethostname()}:{os.getpid()}"
        self._paused_until: dict[str, float] = {}

    @property
    def streams(self) -> dict[str, str]:
        return {self._names.ingress_stream(p): p for p in self._options.producers}

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self._redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop`` is set; Redis errors back off instead of spinning."""
        backoff = 0.1
        await self._with_backoff(self.ensure_groups)
        while not stop.is_set():
            try:
                await self.reclaim_once()
                await self.forward_once()
                backoff = 0.1
            except ResponseError as exc:
                if str(exc).startswith("NOGROUP"):
                    await self._with_backoff(self.ensure_groups)
                    continue
                raise
            except UNAVAILABLE as exc:
                log.warning("ingress.redis_unavailable", error=str(exc), backoff_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def forward_once(self) -> int:
        """One XREADGROUP over all ingress streams; returns how many entries were settled."""
        now = asyncio.get_running_loop().time()
        streams: dict[Any, Any] = {s: ">" for s, p in self.streams.items() if self._paused_until.get(p, 0) <= now}
        if not streams:
            await asyncio.sleep(0.05)
            return 0
        reply = await self._redis.xreadgroup(
            GROUP, self.consumer, streams, count=self._options.batch, block=self._options.block_ms
        )
        settled = 0
        for stream, entries in reply or []:
            producer = self.streams[_text(stream)]
            for entry_id, fields in entries:
                if fields is not None:
                    settled += await self.settle(producer, _text(entry_id), fields.get(b"m", b""))
        return settled

    async def reclaim_once(self) -> None:
        """Re-forward entries a crashed forwarder left pending (the dedupe key makes it idempotent)."""
        for stream, producer in self.streams.items():
            _, claimed, *_ = await self._redis.xautoclaim(
                stream, GROUP, self.consumer, self._options.reclaim_min_idle_ms, "0-0", count=self._options.batch
            )
            for entry_id, fields in claimed:
                if fields is not None:
                    await self.settle(producer, _text(entry_id), fields.get(b"m", b""))

    async def settle(self, producer: str, entry_id: str, raw: bytes) -> int:
        """Forward, or dead-letter with a reason; ack the ingress entry unless the partition is full."""
        stream = self._names.ingress_stream(producer)
        try:
            work = await self._validated(producer, entry_id, raw)
            part = Partition.of(self._names, model=work.model, version=work.version)
            await self._admit(part, work)
        except Overloaded as exc:
            pause = float(exc.details.get("retry_after_s", 1))
            self._paused_until[producer] = asyncio.get_running_loop().time() + pause
            log.info("ingress.paused", producer=producer, retry_after_s=pause)
            return 0
        except InferqError as exc:
            await self._reject(producer, entry_id, raw, exc)
            return 1
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()
        return 1

    async def _validated(self, producer: str, entry_id: str, raw: bytes) -> InferRequest:
        try:
            model = msgspec.msgpack.decode(raw, type=_ModelOnly).model
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"undecodable message: {exc}", field="m") from None
        version = await self._resolve(ModelRef.parse(model))
        tenant = self._options.producers[producer]
        try:
            _, work = build_request(
                raw, producer=producer, tenant=tenant, entry_id=entry_id, version=version, options=self._options
            )
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"undecodable message: {exc}", field="m") from None
        return work

    async def _admit(self, part: Partition, work: InferRequest) -> None:
        dedupe = f"{self._names.prefix}:{{{part.key}}}:fwd:{work.id}"
        args = [self._options.admission_limit, message_encoder.encode(work), self._options.dedupe_ttl_s]
        result = await self._redis.eval(FORWARD, 3, part.work, part.rate_key, dedupe, *args)  # type: ignore[arg-type,misc]
        if isinstance(result, list):
            backlog, rate = int(result[0]), float(result[1])
            retry = max(1, int(backlog / rate)) if rate > 0 else 1
            raise Overloaded("partition is full", backlog=backlog, retry_after_s=min(retry, 60))

    async def _reject(self, producer: str, entry_id: str, raw: bytes, exc: InferqError) -> None:
        stream = self._names.ingress_stream(producer)
        rid = request_id(producer, entry_id)
        failed = InferResult(
            id=rid, tenant=self._options.producers[producer], model="", version=0, status="failed",
            error=ErrorInfo.from_exception(exc), correlation_id=rid,
        )  # fmt: skip
        log.warning("ingress.rejected", producer=producer, entry_id=entry_id, code=exc.code, reason=exc.message)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(
                f"{stream}:dlq",
                {"m": raw, "reason": f"{exc.code}: {exc.message}", "origin_id": entry_id},
                maxlen=100_000,
                approximate=True,
            )
            pipe.xadd(self._names.producer_replies(producer), {"m": message_encoder.encode(failed)}, maxlen=100_000)
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def _with_backoff(self, action: Callable[[], Awaitable[None]]) -> None:
        delay = 0.1
        while True:
            try:
                await action()
                return
            except UNAVAILABLE as exc:
                log.warning("ingress.retry", error=str(exc), backoff_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class _ModelOnly(msgspec.Struct):
    model: str


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
