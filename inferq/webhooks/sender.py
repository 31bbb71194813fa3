"""One webhook attempt: POST to a checked address, never follow a redirect, keep only a short excerpt of the answer.

``send`` never raises for network or HTTP trouble: it returns an ``AttemptOutcome`` that the delivery
worker records and feeds to the schedule (``ok`` → delivered, ``gone`` → disable the endpoint, anything
else → ``next_delay(…, retry_after=outcome.retry_after_s)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import msgspec

from inferq.errors import UnsafeWebhookUrl
from inferq.webhooks.addresses import WebhookTarget, check_url, resolve
from inferq.webhooks.networks import IPAddress
from inferq.webhooks.schedule import parse_retry_after

MAX_TIMEOUT_S = 15.0
EXCERPT_CHARS = 256
_EXCERPT_BYTES = 4 * EXCERPT_CHARS  # enough for 256 characters of UTF-8
_MESSAGE_CHARS = 200
_OWN_HEADERS = frozenset({"host", "connection", "content-length", "transfer-encoding", "accept-encoding"})
USER_AGENT = "inferq-webhooks"


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt came to; ``error`` is None exactly when ``ok``."""

    status: int | None = None  # None when no HTTP answer came
    ok: bool = False  # a 2xx answer
    gone: bool = False  # 410: the receiver asks to disable the endpoint
    retry_after_s: float | None = None  # the receiver's Retry-After, in seconds
    error: str | None = None  # "timeout", "redirect refused", "connection refused", "unsafe address: …", "HTTP 500"
    excerpt: str = ""  # at most 256 characters of the response body
    duration_ms: float = 0.0


def new_client() -> httpx.AsyncClient:
    """A client fit for ``send``: no redirects, no proxy or netrc from the environment, no cookies kept."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        headers={"user-agent": USER_AGENT},
    )


async def send(
    client: httpx.AsyncClient | None,
    *,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    allow_private: bool,
) -> AttemptOutcome:
    """POST ``body`` to ``url`` once, through an address that ``addresses.resolve`` checked.

    ``client`` should come from ``new_client`` (None: a client for this attempt alone). The whole attempt,
    name resolution included, is bounded by ``timeout_s`` (at most 15 s).
    """
    started = time.perf_counter()
    budget_s = min(timeout_s, MAX_TIMEOUT_S)
    try:
        async with asyncio.timeout(budget_s):
            target = check_url(url, allow_private=allow_private)
            addresses = await resolve(target, allow_private=allow_private)
            async with contextlib.AsyncExitStack() as stack:
                used = client if client is not None else await stack.enter_async_context(new_client())
                outcome = await _post(
                    used, target=target, addresses=addresses, body=body, headers=headers, timeout_s=budget_s
                )
    except UnsafeWebhookUrl as exc:
        outcome = AttemptOutcome(error=f"unsafe address: {exc.message}")
    except (TimeoutError, httpx.TimeoutException):
        outcome = AttemptOutcome(error="timeout")
    except httpx.ConnectError as exc:
        outcome = AttemptOutcome(error=_connect_failure(exc))
    except httpx.HTTPError as exc:
        outcome = AttemptOutcome(error=_clipped(f"{type(exc).__name__}: {exc}"))
    except socket.gaierror as exc:
        outcome = AttemptOutcome(error=_clipped(f"name resolution failed: {exc.strerror or exc}"))
    except OSError as exc:
        outcome = AttemptOutcome(error=_clipped(f"network error: {exc}"))
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    return msgspec.structs.replace(outcome, duration_ms=duration_ms)


async def _post(
    client: httpx.AsyncClient,
    *,
    target: WebhookTarget,
    addresses: tuple[IPAddress, ...],
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
) -> AttemptOutcome:
    """POST through the checked addresses in order, until one accepts the connection."""
    sent = {name: value for name, value in headers.items() if name.lower() not in _OWN_HEADERS}
    sent |= {"host": target.host_header, "accept-encoding": "identity"}
    extensions: dict[str, str] = {}
    if target.scheme == "https":
        if target.ip is None:
            extensions["sni_hostname"] = target.host  # TLS sends and verifies the name, not the address
        # NOTE: the pool keys connections by address; a TLS connection verified for one name must never carry
        # another name's request, so https connections are not kept.
        sent["connection"] = "close"
    for index, ip in enumerate(addresses):
        request = client.build_request(
            "POST", target.url_for(ip), content=body, headers=sent, timeout=timeout_s, extensions=extensions
        )
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectError:
            if index == len(addresses) - 1:
                raise
            continue
        try:
            excerpt = await _excerpt(response)
        finally:
            await response.aclose()
        return _judged(response, excerpt=excerpt)
    raise AssertionError("resolve returns at least one address")


async def _excerpt(response: httpx.Response) -> str:
    """The start of the body, read raw (no decompression) and never more than a few KiB of it."""
    kept = bytearray()
    async for chunk in response.aiter_raw():
        kept += chunk[: _EXCERPT_BYTES - len(kept)]
        if len(kept) >= _EXCERPT_BYTES:
            break
    return kept.decode("utf-8", "replace")[:EXCERPT_CHARS]


def _judged(response: httpx.Response, *, excerpt: str) -> AttemptOutcome:
    status = response.status_code
    if 200 <= status < 300:
        return AttemptOutcome(status=status, ok=True, excerpt=excerpt)
    error = "redirect refused" if 300 <= status < 400 else f"HTTP {status}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return AttemptOutcome(status=status, gone=status == 410, retry_after_s=retry_after, error=error, excerpt=excerpt)


def _connect_failure(exc: httpx.ConnectError) -> str:
    """A short reason from the exception chain: refused, TLS trouble, or the library's own words."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _clipped(f"TLS certificate rejected: {cause.verify_message}")
        if isinstance(cause, ssl.SSLError):
            return _clipped(f"TLS failed: {cause.reason or cause}")
        cause = cause.__cause__ or cause.__context__
    return _clipped(f"connection failed: {exc}")


def _clipped(message: str) -> str:
    return message if len(message) <= _MESSAGE_CHARS else message[: _MESSAGE_CHARS - 1] + "…"
