"""Which IP addresses a webhook may reach: public ones only, whatever IPv6 form an IPv4 address hides in.

``allow_private`` (``INFERQ_WEBHOOK_ALLOW_PRIVATE``, tests and ``make dev`` only) lets loopback, private and
CGNAT addresses through; the unspecified, multicast, link-local, metadata and reserved ones stay refused.
"""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Cloud instance metadata: AWS/GCP/Azure, AWS ECS tasks, AWS over IPv6, Alibaba (inside the CGNAT range).
_METADATA = frozenset(
    ipaddress.ip_address(text) for text in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
# IANA special-purpose ranges that the ipaddress module of some Python versions still calls global.
_SPECIAL = tuple(
    ipaddress.ip_network(text)
    for text in (
        "192.0.0.0/24",
        "192.88.99.0/24",
        "198.18.0.0/15",
        "100::/64",
        "64:ff9b:1::/48",
        "3fff::/20",
        "5f00::/16",
    )
)
_LOOPBACK = "a loopback address"
_PRIVATE = "a private address"
_SHARED = "a shared (CGNAT) address"
_ALLOWED_WHEN_PRIVATE = frozenset({_LOOPBACK, _PRIVATE, _SHARED})  # what INFERQ_WEBHOOK_ALLOW_PRIVATE lets through


def refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``ip`` must not be connected to ("a loopback address", …), or None when it may be."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped IPv6 address"
        if ip.ipv4_mapped is not None:  # refused in any case: the IPv4 form is the one to register
            inner = refusal(ip.ipv4_mapped, allow_private=allow_private)
            return f"the IPv4-mapped form of {ip.ipv4_mapped}" + (f" ({inner})" if inner else "")
        for inner_ip, form in _embedded(ip):
            inner = refusal(inner_ip, allow_private=allow_private)
            if inner is not None:
                return f"the {form} form of {inner_ip} ({inner})"
    kind = _kind(ip)
    return None if kind is None or (allow_private and kind in _ALLOWED_WHEN_PRIVATE) else kind


def _kind(ip: IPAddress) -> str | None:
    """The kind of non-public address ``ip`` is, or None for a public one."""
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "the unspecified address"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in _THIS_NETWORK:
            return "in 0.0.0.0/8 (this host on this network)"
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "the broadcast address"
        if ip in _CGNAT:
            return _SHARED
    elif ip.is_site_local:
        return "a site-local address"
    checks = (
        (ip.is_loopback, _LOOPBACK),
        (ip.is_multicast, "a multicast address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, _PRIVATE),
        (any(ip in network for network in _SPECIAL), "a special-purpose address"),
        (not ip.is_global, "not globally routable"),
    )
    return next((kind for refused, kind in checks if refused), None)


def _embedded(ip: ipaddress.IPv6Address) -> list[tuple[ipaddress.IPv4Address, str]]:
    """IPv4 addresses that an IPv6 address carries and that a gateway may route to (6to4, Teredo, NAT64)."""
    found: list[tuple[ipaddress.IPv4Address, str]] = []
    if ip.sixtofour is not None:
        found.append((ip.sixtofour, "6to4"))
    if ip.teredo is not None:
        found.extend((inner, "Teredo") for inner in ip.teredo)
    if ip in _NAT64:
        found.append((ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF), "NAT64"))
    return found
