"""A burst of requests on a cold key cache, against a real ``inferq serve``: made-up keys are cut off by the
per-address lookup bucket before they load Postgres; one valid key should never be.

The bucket refills at ``INFERQ_AUTH_IP_RATE``; it is set to almost nothing here so the counts are exact.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

import httpx

from .harness import Stack, bearer

BURST = 30  # INFERQ_AUTH_IP_BURST: key lookups one address may make at once
CALLS = 100
LOOKUPS = {"INFERQ_AUTH_IP_RATE": 0.0001, "INFERQ_AUTH_IP_BURST": BURST}


def made_up_key() -> str:
    return f"iq_{secrets.token_hex(8)}_{secrets.token_hex(24)}"


def outcomes(responses: list[httpx.Response]) -> Counter[tuple[int, str]]:
    """``(status, problem code or details.scope)`` of each response, counted."""
    found: Counter[tuple[int, str]] = Counter()
    for response in responses:
        body = response.json()
        found[(response.status_code, body.get("details", {}).get("scope") or body.get("code") or "ok")] += 1
    return found


async def test_a_flood_of_made_up_keys_stops_at_the_address_bucket(stack: Stack) -> None:
    api = stack.serve(**LOOKUPS)
    await stack.api_ready(api)
    async with api.client() as http:
        responses = await asyncio.gather(*(http.get("/v1/models", headers=bearer(made_up_key())) for _ in range(CALLS)))
        known = await http.get("/v1/models")  # a real key from the same address: its first lookup is refused too
    assert outcomes(responses) == {(401, "unauthenticated"): BURST, (429, "address"): CALLS - BURST}
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert (known.status_code, known.json()["details"]["scope"]) == (429, "address")
    assert api.proc.alive()


async def test_a_burst_with_one_valid_key_is_never_stopped_by_the_address_bucket(stack: Stack) -> None:
    api = stack.serve(**LOOKUPS)
    await stack.api_ready(api)
    async with api.client() as http:
        responses = await asyncio.gather(*(http.get("/v1/models") for _ in range(CALLS)))
    assert outcomes(responses) == {(200, "ok"): CALLS}
