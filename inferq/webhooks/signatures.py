"""Standard Webhooks signing: ``whsec_`` secrets and ``v1,<base64>`` HMAC-SHA256 signatures, made and checked.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; during a secret rotation the
``webhook-signature`` header carries one signature per active secret, space-separated, so a receiver
holding either secret verifies. Receivers use the ``standardwebhooks`` library; ``verify`` here is for
our own tests and CLI.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_bytes
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # as Svix and the Standard Webhooks reference libraries make them (the spec allows 24–64)
TOLERANCE_S = 300  # the timestamp window receivers accept, the libraries' default


class InvalidSignature(ValueError):
    """A webhook whose headers are missing or malformed, whose timestamp is stale, or whose signature fits no secret."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and the base64 of 24 random bytes (shown to its tenant once)."""
    return SECRET_PREFIX + base64.b64encode(random_bytes.token_bytes(SECRET_BYTES)).decode("ascii")


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message under one secret."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: str | Sequence[str], *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per active secret, space-separated (rotation)."""
    active = _listed(secrets)
    if not active:
        raise ValueError("at least one webhook secret is needed to sign")
    return " ".join(sign(secret, msg_id=msg_id, timestamp=timestamp, body=body) for secret in active)


def headers(secrets: str | Sequence[str], *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt; ``msg_id`` stays the same across retries of one event."""
    if not msg_id or not msg_id.isascii() or not msg_id.isprintable() or " " in msg_id:
        raise ValueError(f"webhook id {msg_id!r} must be non-empty printable ASCII without spaces")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id=msg_id, timestamp=timestamp, body=body),
        "content-type": "application/json",
    }


def verify(
    secrets: str | Sequence[str],
    *,
    body: bytes,
    headers: Mapping[str, str],
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a received webhook against any of ``secrets``; raise ``InvalidSignature`` when it does not verify."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    offered = lowered.get("webhook-signature", "")
    if not (msg_id and stamp and offered):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    if not stamp.isdigit():
        raise InvalidSignature(f"webhook-timestamp {stamp!r} is not a Unix time in seconds")
    timestamp = int(stamp)
    skew = timestamp - (time.time() if now is None else now)
    if abs(skew) > tolerance_s:
        raise InvalidSignature(f"webhook-timestamp is {abs(skew):.0f} s {'ahead' if skew > 0 else 'old'}")
    candidates = [_signature_bytes(entry) for entry in offered.split(" ") if entry]
    for secret in _listed(secrets):
        expected = _signature_bytes(sign(secret, msg_id=msg_id, timestamp=timestamp, body=body))
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates if candidate):
            return
    raise InvalidSignature("no webhook signature matches")


def _listed(secrets: str | Sequence[str]) -> list[str]:
    """One secret or several (a bare string is one secret, not a sequence of characters)."""
    return [secrets] if isinstance(secrets, str) else list(secrets)


def _signature_bytes(entry: str) -> bytes:
    """The raw digest of a ``v1,<base64>`` entry; empty for other versions or malformed entries."""
    version, _, encoded = entry.partition(",")
    if version != "v1":
        return b""
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return b""


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError(f"a webhook secret is {SECRET_PREFIX!r} followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a webhook secret holds 24 to 64 bytes, not {len(key)}")
    return key
