"""The key cache and the per-address bucket in front of Postgres, with a fake store and a fake clock."""

from __future__ import annotations

import pytest

from inferq.api.auth import Authenticator
from inferq.contracts.auth import Limits, TenantLimits
from inferq.errors import RateLimited, Unauthenticated
from inferq.store.keys import KeyHasher, KeyRecord

PEPPER = "p" * 32
KEY_ID, SECRET = "a" * 16, "b" * 48
LIMITS = Limits(rate_per_s=1, burst=1, concurrency=1, max_rows=1, max_elements=1)


class FakeKeys:
    def __init__(self) -> None:
        self.lookups = 0
        digest = KeyHasher(PEPPER).digest(KEY_ID, SECRET)
        self.record = KeyRecord(
            id=KEY_ID, tenant="acme", scopes=frozenset({"predict"}), secret_hash=digest,
            expires_at=None, revoked_at=None, limits=TenantLimits(),
        )  # fmt: skip

    async def lookup(self, key_id: str) -> KeyRecord | None:
        self.lookups += 1
        return self.record if key_id == KEY_ID else None


def headers(key_id: str, secret: str = SECRET) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer iq_{key_id}_{secret}".encode())]


@pytest.fixture
def clock() -> list[float]:
    return [0.0]


@pytest.fixture
def auth(clock: list[float]) -> tuple[Authenticator, FakeKeys]:
    keys = FakeKeys()
    authenticator = Authenticator(
        keys,  # type: ignore[arg-type]
        hasher=KeyHasher(PEPPER), defaults=LIMITS, cache_s=5.0, ip_rate=0.1, ip_burst=3, clock=lambda: clock[0],
    )  # fmt: skip
    return authenticator, keys


async def test_made_up_keys_from_the_same_address_never_lock_out_a_known_key(
    auth: tuple[Authenticator, FakeKeys], clock: list[float]
) -> None:
    authenticator, keys = auth
    assert (await authenticator.authenticate(headers(KEY_ID), "10.0.0.1")).tenant == "acme"
    for round_ in range(5):  # each round: the bucket is emptied by made-up keys, then the real key's entry expires
        for i in range(3):
            with pytest.raises((Unauthenticated, RateLimited)):
                await authenticator.authenticate(headers(f"{round_:08x}{i:08x}"), "10.0.0.1")
        clock[0] += 6.0
        principal = await authenticator.authenticate(headers(KEY_ID), "10.0.0.1")  # re-checked, no token needed
        assert principal.key_id == KEY_ID
    assert keys.lookups >= 6  # the real key was looked up again after each expiry (revocation still applies)


async def test_a_wrong_secret_for_a_cached_key_is_refused(auth: tuple[Authenticator, FakeKeys]) -> None:
    authenticator, _ = auth
    await authenticator.authenticate(headers(KEY_ID), "10.0.0.1")
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(headers(KEY_ID, "c" * 48), "10.0.0.1")


async def test_unknown_ids_are_cached_apart_and_cost_one_lookup_each(
    auth: tuple[Authenticator, FakeKeys], clock: list[float]
) -> None:
    authenticator, keys = auth
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await authenticator.authenticate(headers("f" * 16), "10.0.0.2")
    assert keys.lookups == 1
    assert authenticator._cache.get("f" * 16) is None  # never among the known keys
