"""The result cache's read side: a deterministic version's answer to inputs it was sent within its TTL.

Opt-in per version (serving override ``result_cache_ttl_s`` > 0; refused at registration for models with
random operators, ``store.records.check_result_cache``). The key is the partition (``model@version``) and
``contracts.digests.input_digest`` of the message's tensors and the output asked for, so records, rows and
named tensors with the same values share it. One script reads the key and, on a hit, spends the caller's
rate quota (a hit takes no in-flight slot: nothing runs); a miss spends nothing here, the admission script
does. A miss names the key on the message, and the worker that runs it stores its outputs there
(``workers.publisher``). Redis failing here is a miss, never an error: the queue path still serves.
"""

from __future__ import annotations

import asyncio

import msgspec
import redis.asyncio as aioredis
import structlog

from inferq.api.metrics import Metrics
from inferq.contracts.auth import Principal
from inferq.contracts.cached import CachedResult, cached_decoder
from inferq.contracts.digests import input_digest
from inferq.contracts.messages import InferRequest, InferResult, Timings
from inferq.contracts.models import ModelVersion
from inferq.contracts.names import Names
from inferq.store.records import RESULT_CACHE_TTL_S
from inferq.streams.connection import UNAVAILABLE
from inferq.streams.quotas import SPEND, Quota, gcra_step

log = structlog.get_logger(__name__)

# KEYS[1] cache key, KEYS[2] the caller's quota key; ARGV[1] interval ms, ARGV[2] burst.
# Returns nil (a miss: nothing spent), {'rate', wait ms} (a hit over the rate), or the cached value (rate spent).
LOOKUP = (
    "local cached = redis.call('GET', KEYS[1])\n"
    "if not cached then return nil end\n"
    + gcra_step(interval=1, quota=2, burst=2)
    + "if wait > 0 then return {'rate', string.format('%d', math.max(1, math.ceil(wait)))} end\n"
    + SPEND.format(quota=2)
    + "return cached\n"
)
_NO_TIMINGS = Timings(queue_ms=0.0, inference_ms=0.0, batch_rows=0)


def cache_ttl_ms(version: ModelVersion) -> int:
    """The version's result-cache TTL in ms; 0 = off (the default, and always for nondeterministic models)."""
    ttl_s = version.overrides.get(RESULT_CACHE_TTL_S, 0)
    if ttl_s <= 0 or version.signature.nondeterministic_ops:  # NOTE: refused at registration; never trusted
        return 0
    return max(1, round(ttl_s * 1000))


class ResultCache:
    """Looks calls up before they are enqueued; built once per process, around the open Redis client."""

    def __init__(self, redis: aioredis.Redis, *, names: Names, metrics: Metrics, timeout_s: float) -> None:
        self._redis = redis
        self._names = names
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._lookup_script = redis.register_script(LOOKUP)  # EVALSHA: the script's text is sent once

    async def consult(
        self, message: InferRequest, version: ModelVersion, *, caller: Principal
    ) -> tuple[InferRequest, InferResult | None]:
        """``(message, result)`` for a hit: the cached outputs under the message's own id and tenant.
        ``(message naming its cache key, None)`` for a miss; ``(message, None)`` when the version does not cache.

        Raises ``RateLimited`` when a hit finds the caller's rate spent (as the enqueue would have).
        """
        ttl_ms = cache_ttl_ms(version)
        if ttl_ms == 0:
            return message, None
        digest = input_digest(message.inputs, output=message.output, output_names=message.output_names)
        key = self._names.result_cache(self._names.partition(version.model, version.version), caller.tenant, digest)
        value = await self._lookup(key, Quota.of(caller, self._names), version)
        hit = value is not None
        self._metrics.count_cache(model=version.model, version=version.version, hit=hit)
        if value is None:
            return msgspec.structs.replace(message, cache_key=key, cache_ttl_ms=ttl_ms), None
        return message, InferResult(
            id=message.id,
            tenant=message.tenant,
            model=message.model,
            version=message.version,
            status="succeeded",
            predictions=value.predictions,
            tensors=value.tensors,
            timings=_NO_TIMINGS,
            correlation_id=message.correlation_id,
        )

    async def _lookup(self, key: str, quota: Quota, version: ModelVersion) -> CachedResult | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                args = (str(quota.interval_ms), str(quota.burst))
                reply = await self._lookup_script(keys=[key, quota.quota_key], args=args)
        except UNAVAILABLE as exc:  # TimeoutError included; the queue path still serves: a miss, not an error
            log.warning("result_cache.lookup_failed", error=str(exc) or type(exc).__name__)
            return None
        except aioredis.ResponseError as exc:  # e.g. an ACL without the cache keys: a miss too, but say so
            log.warning("result_cache.lookup_refused", error=str(exc))
            return None
        if reply is None:
            return None
        if isinstance(reply, list):
            self._metrics.count_prediction(model=version.model, version=version.version, outcome="rate_limited")
            raise quota.rate_limited(float(reply[1]))
        try:
            return cached_decoder.decode(reply)
        except msgspec.DecodeError as exc:  # a value of another format: served by the worker, and rewritten
            log.warning("result_cache.undecodable", key=key, error=str(exc))
            return None
