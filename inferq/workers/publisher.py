"""Settling a batch: store + announce every result (and cache the cacheable), dead-letter, then XACK + XDEL, in one
pipeline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import Pipeline

from inferq.contracts.cached import CachedResult, cached_encoder
from inferq.contracts.digests import input_digest
from inferq.contracts.messages import InferRequest, InferResult, JobChunkRef, Reply
from inferq.contracts.names import Names
from inferq.streams.consumer import Entry, ack, dead_letter, release
from inferq.streams.partition import Partition
from inferq.streams.results import ResultStore, encode_result

log = structlog.get_logger(__name__)

REPLY_STREAM_MAX_LEN = 100_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with one entry: store ``result`` (announced to ``reply``); with ``dead_reason``,
    move the entry to the dead-letter stream instead of only acking it."""

    entry: Entry
    result: InferResult | None
    reply: Reply | None = None
    dead_reason: str | None = None
    job: JobChunkRef | None = None  # a job chunk: its result goes to Postgres (workers/job_sink.py)
    rows: int = 0
    retry: bool = False  # not settled (its result could not be stored): leave it pending, uncounted
    request: InferRequest | None = None  # the decoded message (shadow_of, logged, … for the settle and the log)


class JobOutcomes(Protocol):
    """Where job chunks' outcomes go before their entries are acked (``workers.job_sink.JobSink``)."""

    async def persist(self, outcomes: Sequence[Outcome]) -> list[Outcome]: ...

    async def ended(self, job_ids: Sequence[str]) -> set[str]: ...


class Publisher:
    """One round trip per batch, however many results (research/performance.md: pipelining is worth 3.6×)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        results: ResultStore,
        names: Names,
        jobs: JobOutcomes | None = None,
        observe: Callable[[Partition, Sequence[Outcome]], None] | None = None,
    ) -> None:
        self._redis = redis
        self._results = results
        self._names = names
        self.jobs = jobs
        self._observe = observe  # metrics, the prediction log (workers/observers.py)

    async def prepare(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Job chunks' outcomes stored in Postgres first; what is left to settle on Redis."""
        if self.jobs is None:
            return list(outcomes)
        return await self.jobs.persist(outcomes)

    async def settle(self, part: Partition, outcomes: Sequence[Outcome], *, consumer: str) -> None:
        """Store and announce every result, then dead-letter or ack each entry. Raises on Redis errors:
        nothing is lost, the entries stay pending and the caller settles again (stores are idempotent)."""
        if self._observe is not None:  # before ``prepare``, which keeps job chunks' results for Postgres only
            self._observe(part, outcomes)
        outcomes = await self.prepare(outcomes)
        if not outcomes:
            return
        pipe = self._redis.pipeline(transaction=False)
        self.queue(pipe, part, outcomes, consumer=consumer, observed=True)
        await pipe.execute()

    def queue(
        self, pipe: Pipeline, part: Partition, outcomes: Sequence[Outcome], *, consumer: str, observed: bool = False
    ) -> None:
        """Queue ``settle``'s commands on ``pipe``, for a caller that adds more to the round trip."""
        if self._observe is not None and not observed:
            self._observe(part, outcomes)
        for outcome in outcomes:
            # NOTE: a shadow's result is only logged (the observers saw it): never stored, never announced.
            if outcome.result is not None and not (outcome.request is not None and outcome.request.shadow_of):
                self._remember(pipe, outcome.result, outcome.request)  # before the store: cached once announced
                self._store(pipe, outcome.result, outcome.reply)
        release(pipe, part, consumer=consumer, entries=[o.entry for o in outcomes if o.retry])
        acked = []
        for outcome in outcomes:
            if outcome.retry:
                continue
            if outcome.dead_reason is not None:
                dead_letter(pipe, part, outcome.entry, reason=outcome.dead_reason)
            else:
                acked.append(outcome.entry)
        ack(pipe, part, acked)

    def _remember(self, pipe: Pipeline, result: InferResult, request: InferRequest | None) -> None:
        """A succeeded result of a request that names a cache key is also kept there (the result cache),
        outputs only, for the request's ``cache_ttl_ms``. Failures are never cached.

        NOTE: the key must be the one this request's own partition and inputs make: the API sets it and the
        ingress forwarder never copies it from a producer, but a message naming any other key (another input's,
        a quota, a result) writes nothing, so no message can put its outputs under inputs it did not run.
        """
        if request is None or not request.cache_key or request.cache_ttl_ms <= 0 or result.status != "succeeded":
            return
        digest = input_digest(request.inputs, output=request.output, output_names=request.output_names)
        partition = self._names.partition(request.model, request.version)
        if request.cache_key != self._names.result_cache(partition, request.tenant, digest):
            log.warning("result_cache.key_refused", id=request.id, model=request.model, version=request.version)
            return
        value = cached_encoder.encode(CachedResult(predictions=result.predictions, tensors=result.tensors))
        pipe.set(request.cache_key, value, px=request.cache_ttl_ms)

    def _store(self, pipe: Pipeline, result: InferResult, reply: Reply | None) -> None:
        channel = stream = None
        if reply is not None and reply.kind == "api":
            channel = self._names.reply_channel(reply.name)
        elif reply is not None and reply.kind == "producer":
            stream = self._names.producer_replies(reply.name)
        self._results.store(
            pipe,
            key=self._names.result(result.id),
            value=encode_result(result),
            channel=channel,
            stream=stream,
            stream_max_len=REPLY_STREAM_MAX_LEN,
        )
        if result.key_id:  # the caller's API key gets its in-flight slot back (streams/quotas.py)
            pipe.zrem(self._names.in_flight(result.key_id), result.id)
