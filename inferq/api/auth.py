"""Who is calling: ``Authorization: Bearer iq_<id>_<secret>`` checked against Postgres, through a cache.

A key is looked up by its id, its secret compared in constant time with the stored HMAC. Answers —
found or not — are cached for ``INFERQ_KEY_CACHE_S`` (the documented revocation lag), so a storm of
requests with an unknown key costs Postgres one lookup per key id and cache period (concurrent requests
for the same id share one lookup), and a per-address
token bucket in front of the cache-missing lookups keeps unauthenticated traffic from loading it at
all. Postgres down with a key not in the cache is a 503: fail closed. Every failure reads the same
("invalid, revoked or expired") whichever check failed; keys are never logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from inferq.contracts.auth import KEY_PATTERN, Limits, Principal, Scope
from inferq.errors import Forbidden, RateLimited, Unauthenticated
from inferq.settings import Settings
from inferq.store.keys import KeyHasher, KeyRecord, KeyStore

MAX_CACHED_KEYS = 100_000
MAX_TRACKED_ADDRESSES = 100_000
_INVALID = "invalid, revoked or expired API key"


class Authenticator:
    """``authenticate(headers, address)`` → the caller's :class:`Principal`, or an ``InferqError``."""

    def __init__(
        self,
        keys: KeyStore,
        *,
        hasher: KeyHasher,
        defaults: Limits,
        cache_s: float,
        ip_rate: float,
        ip_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self._hasher = hasher
        self._defaults = defaults
        self._cache_s = cache_s
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, KeyRecord]] = OrderedDict()  # keys found (valid or not)
        self._unknown: OrderedDict[str, float] = OrderedDict()  # ids not found, until when
        self._pending: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._lookups = AddressBuckets(rate=ip_rate, burst=ip_burst, clock=clock)

    @classmethod
    def of(cls, settings: Settings, keys: KeyStore, hasher: KeyHasher) -> Authenticator:
        auth = settings.auth
        return cls(
            keys,
            hasher=hasher,
            defaults=default_limits(settings),
            cache_s=auth.key_cache_s,
            ip_rate=auth.auth_ip_rate,
            ip_burst=auth.auth_ip_burst,
        )

    async def authenticate(self, headers: Iterable[tuple[bytes, bytes]], address: str) -> Principal:
        key_id, secret = _bearer(headers)
        record = await self._record(key_id, address)
        now = dt.datetime.now(dt.UTC)
        if record is None or not self._hasher.matches(key_id, secret, record.secret_hash) or not record.usable(now):
            raise Unauthenticated(_INVALID)
        return Principal(
            key_id=record.id,
            tenant=record.tenant,
            scopes=record.scopes,
            limits=self._defaults.overridden(record.limits),
        )

    async def _record(self, key_id: str, address: str) -> KeyRecord | None:
        now = self._clock()
        known = self._cache.get(key_id)
        if known is not None and known[0] > now:
            return known[1]
        unknown = self._unknown.get(key_id)
        if unknown is not None and unknown > now:
            return None
        pending = self._pending.get(key_id)
        if pending is not None:  # a lookup of this id is under way: share it (and no token is taken)
            return await asyncio.shield(pending)
        # NOTE: re-checking a key that was valid costs no token: made-up keys from the same address (a NAT,
        # a proxy) must not lock a real client out each time its cache entry expires.
        wait_s = 0.0 if known is not None else self._lookups.take(address)
        if wait_s > 0:  # this address misses the cache too often: no more Postgres lookups for now
            raise RateLimited(
                "too many unauthenticated requests from this address", retry_after_s=wait_s, scope="address"
            )
        lookup = self._pending[key_id] = asyncio.ensure_future(self._lookup(key_id, now))
        try:
            return await asyncio.shield(lookup)
        finally:
            if lookup.done():
                self._pending.pop(key_id, None)

    async def _lookup(self, key_id: str, now: float) -> KeyRecord | None:
        try:
            record = await self._keys.lookup(key_id)  # ServiceUnavailable when Postgres is down: a 503
        finally:
            self._pending.pop(key_id, None)
        if record is None:  # unknown ids apart: a flood of made-up keys cannot push real ones out
            self._cache.pop(key_id, None)
            self._unknown[key_id] = now + self._cache_s
            self._unknown.move_to_end(key_id)
            while len(self._unknown) > MAX_CACHED_KEYS:
                self._unknown.popitem(last=False)
            return None
        self._cache[key_id] = (now + self._cache_s, record)
        self._cache.move_to_end(key_id)
        while len(self._cache) > MAX_CACHED_KEYS:
            self._cache.popitem(last=False)
        return record


def require(principal: Principal, *scopes: Scope) -> Principal:
    """``principal`` when it has one of ``scopes``; else ``Forbidden`` naming them."""
    if not any(principal.allows(scope) for scope in scopes):
        wanted = " or ".join(repr(s) for s in scopes)
        raise Forbidden(f"this API key lacks the {wanted} scope", needs=list(scopes), has=sorted(principal.scopes))
    return principal


def default_limits(settings: Settings) -> Limits:
    auth = settings.auth
    return Limits(
        rate_per_s=auth.key_rate_per_s,
        burst=auth.key_burst,
        concurrency=auth.key_concurrency,
        max_rows=auth.max_rows,
        max_elements=settings.api.max_elements,
    )


class AddressBuckets:
    """A token bucket per client address (in this process), for the lookups that reach Postgres."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, address: str) -> float:
        """0 when a token was taken; else the seconds until one is available."""
        now = self._clock()
        tokens, then = self._buckets.get(address, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            return (1 - tokens) / self._rate
        self._buckets[address] = (tokens - 1, now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > MAX_TRACKED_ADDRESSES:
            self._buckets.popitem(last=False)
        return 0.0


def _bearer(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str]:
    """``(id, secret)`` of ``Authorization: Bearer iq_<id>_<secret>``; ``Unauthenticated`` otherwise."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            match = KEY_PATTERN.match(token.strip()) if scheme.lower() == "bearer" else None
            if match is None:
                raise Unauthenticated("malformed Authorization header: expected 'Bearer iq_<id>_<secret>'")
            return match[1], match[2]
    raise Unauthenticated("missing API key: send 'Authorization: Bearer iq_<id>_<secret>'")
