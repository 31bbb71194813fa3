"""The webhook SSRF guard: URL syntax, IP literals in every spelling, and resolved addresses that must all be public.

``check_url`` runs at registration and before each attempt (syntax, and IP literals checked at once);
``resolve`` runs before each attempt, and the sender connects to one of the addresses it returned, so
a name cannot be re-pointed between the check and the connection (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from inferq.errors import UnsafeWebhookUrl
from inferq.webhooks.networks import IPAddress, refusal

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 5.0
DEFAULT_PORTS = {"http": 80, "https": 443}

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


class WebhookTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook URL that passed the syntax check: what to connect to and what to name in ``Host``."""

    scheme: Literal["http", "https"]
    host: str  # lower-case name, or the IP address without brackets
    port: int
    path: str  # path and query, at least "/"
    ip: str | None = None  # the address when the host is an IP literal

    @property
    def host_header(self) -> str:
        """The ``Host`` value: the name (bracketed if IPv6), with the port unless it is the scheme's default."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"

    def url_for(self, ip: IPAddress) -> str:
        """The URL that reaches this target through the checked address ``ip``."""
        literal = f"[{ip}]" if ip.version == 6 else str(ip)
        return f"{self.scheme}://{literal}:{self.port}{self.path}"


def check_url(url: str, *, allow_private: bool) -> WebhookTarget:
    """The target of a webhook URL, checked without resolving names; raise ``UnsafeWebhookUrl`` saying why not.

    http or https only, a host, no user info, a port in 1..65535, at most 2048 ASCII characters. IP
    literals are checked right away; decimal, hex, octal and shortened IPv4 forms (``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``, ``127.1``) are always refused, whatever they decode to.
    """
    if len(url) > MAX_URL_LENGTH:
        raise _unsafe(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(ch <= " " or ch in "\x7f\\" for ch in url):
        raise _unsafe("webhook URL must be ASCII without spaces, control characters or backslashes (use punycode "
                      "for names and percent-encoding for paths)")  # fmt: skip
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _unsafe(f"webhook URL is malformed: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise _unsafe(f"webhook URL must use http or https, not {parts.scheme or 'nothing'!r}")
    if "@" in parts.netloc:
        raise _unsafe("webhook URL must not carry a user name or password")
    host = parts.hostname or ""
    if not host:
        raise _unsafe("webhook URL has no host")
    if port == 0:
        raise _unsafe("webhook URL port must be 1..65535")
    scheme: Literal["http", "https"] = "https" if parts.scheme == "https" else "http"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = WebhookTarget(scheme=scheme, host=host, port=port or DEFAULT_PORTS[scheme], path=path)
    ip = _literal(host, bracketed="[" in parts.netloc)
    if ip is not None:
        reason = refusal(ip, allow_private=allow_private)
        if reason is not None:
            raise _unsafe(f"webhook URL host {host} is {reason}", host=host)
        return msgspec.structs.replace(target, ip=str(ip))
    if not allow_private and (host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost")):
        raise _unsafe(f"webhook URL host {host} always names a loopback address", host=host)
    return target


async def resolve(
    target: WebhookTarget, *, allow_private: bool, timeout_s: float = RESOLVE_TIMEOUT_S
) -> tuple[IPAddress, ...]:
    """The target's addresses, every one of them checked; raise ``UnsafeWebhookUrl`` if any is not public.

    One private address among public ones refuses the whole name. A name that does not resolve raises
    ``socket.gaierror``; a resolver slower than ``timeout_s`` raises ``TimeoutError``.
    """
    if target.ip is not None:
        found: tuple[IPAddress, ...] = (ipaddress.ip_address(target.ip),)
    else:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        found = tuple(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{target.host} has no addresses")
    for ip in found:
        reason = refusal(ip, allow_private=allow_private)
        if reason is not None:
            raise _unsafe(f"webhook URL host {target.host} resolves to {ip}, which is {reason}", host=target.host)
    return found


def _literal(host: str, *, bracketed: bool) -> IPAddress | None:
    """The address a host names literally, None for a DNS name; raise for hosts that are neither."""
    if bracketed:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise _unsafe(f"webhook URL host [{host}] is not an IPv6 address", host=host) from None
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()  # a trailing dot: "127.0.0.1." is still an address
    if not _IPV4_PART.fullmatch(labels[-1]):
        if not all(_LABEL.fullmatch(label) for label in labels) or len(host) > 253:
            raise _unsafe(f"webhook URL host {host!r} is not a valid host name", host=host)
        return None
    # NOTE: a host ending in a number is an IPv4 address to browsers, curl and inet_aton, in any of their
    # spellings; decode it the way they do (WHATWG URL) so "0x7f.1" is known as 127.0.0.1, then refuse
    # every spelling but the dotted-decimal one, whatever the address.
    value = _whatwg_ipv4(labels)
    if value is None:
        raise _unsafe(f"webhook URL host {host!r} is neither an IPv4 address nor a host name", host=host)
    ip = ipaddress.IPv4Address(value)
    if host != str(ip):
        reason = refusal(ip, allow_private=False)
        meaning = f"{ip}" + (f", {reason}" if reason else "")
        raise _unsafe(f"webhook URL host {host} is a non-standard spelling of {meaning}; write it as {ip}", host=host)
    return ip


def _whatwg_ipv4(labels: list[str]) -> int | None:
    """The WHATWG URL standard's IPv4 parser: 1–4 parts, each decimal, 0x-hex or 0-octal; None if invalid."""
    if len(labels) > 4:
        return None
    numbers: list[int] = []
    for label in labels:
        if not _IPV4_PART.fullmatch(label):
            return None
        if label[:2].lower() == "0x":
            numbers.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if any(digit in "89" for digit in label):
                return None
            numbers.append(int(label, 8))
        else:
            numbers.append(int(label))
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    return sum(number << (8 * (3 - index)) for index, number in enumerate(leading)) + last


def _unsafe(message: str, **details: str) -> UnsafeWebhookUrl:
    return UnsafeWebhookUrl(message, **details)
