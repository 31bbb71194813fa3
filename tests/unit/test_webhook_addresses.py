"""The webhook SSRF guard: every spelling of a non-public address is refused, public ones pass."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from inferq.errors import UnsafeWebhookUrl
from inferq.webhooks.addresses import WebhookTarget, check_url, resolve
from inferq.webhooks.networks import refusal

# Hosts that reach this machine, its network or its cloud metadata, in every spelling a parser accepts.
NON_PUBLIC = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/hook",
    "http://127.0.0.1./",
    "http://127.255.255.254/",
    "http://2130706433/",  # 127.0.0.1 in decimal
    "http://0x7f000001/",  # hex
    "http://0X7F000001/",
    "http://0177.0.0.1/",  # octal
    "http://0x7f.0.0.1/",
    "http://127.1/",  # shortened
    "http://127.0.1/",
    "http://017700000001/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated)
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://2852039166/",  # 169.254.169.254 in decimal
    "http://169.254.170.2/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://0.0.0.0/",
    "http://0/",
    "http://0.1.2.3/",
    "http://[::]/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://100.64.0.1/",
    "http://100.127.255.254/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://192.0.0.8/",
    "http://198.18.0.1/",
    "http://[3fff::1]/",
    "http://[100::1]/",
    "http://[fd00::1]/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fec0::1]/",
    "http://169.254.1.1/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://192.0.2.1/",
    "http://[2001:db8::1]/",
    "http://localhost/",
    "http://LOCALHOST:8000/",
    "http://localhost./",
    "http://hooks.localhost/",
    "https://127.0.0.1/",
]
MALFORMED = [
    "",
    "example.com/hook",
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "javascript:alert(1)",
    "http:///hook",
    "http://",
    "http://user:pass@example.com/",
    "http://example.com@127.0.0.1/",
    "http://@example.com/",
    "http://example.com:0/",
    "http://example.com:65536/",
    "http://example.com:port/",
    "http://::1/",
    "http://[::1/",
    "http://[v1.fe]/",
    "http://[example.com]/",
    "http://%31%32%37.0.0.1/",
    "http://256.0.0.1/",
    "http://1.2.3.4.5/",
    "http://1.2.3.0x100/",
    "http://08.0.0.1/",
    "http://hooks.0x1/",
    "http://-hooks.example.com/",
    "http://hooks..example.com/",
    "http://exa mple.com/",
    "http://example.com/\nX-Injected: 1",
    "http://example.com\\@127.0.0.1/",
    "http://exämple.com/",
    "http://example.com/" + "a" * 2048,
]
PUBLIC = {
    "http://93.184.216.34/": WebhookTarget(scheme="http", host="93.184.216.34", port=80, path="/", ip="93.184.216.34"),
    "https://[2606:2800::1]/": WebhookTarget(
        scheme="https", host="2606:2800::1", port=443, path="/", ip="2606:2800::1"
    ),
    "https://Hooks.Example.COM:8443/in?team=7#frag": WebhookTarget(
        scheme="https", host="hooks.example.com", port=8443, path="/in?team=7"
    ),
    "http://example.com": WebhookTarget(scheme="http", host="example.com", port=80, path="/"),
    "http://my_hooks.example.com./x": WebhookTarget(scheme="http", host="my_hooks.example.com.", port=80, path="/x"),
}


@pytest.mark.parametrize("url", NON_PUBLIC)
def test_non_public_hosts_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl) as caught:
        check_url(url, allow_private=False)
    assert caught.value.code == "unsafe_webhook_url"


@pytest.mark.parametrize("url", MALFORMED)
@pytest.mark.parametrize("allow_private", [False, True])
def test_malformed_urls_are_refused(url: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeWebhookUrl):
        check_url(url, allow_private=allow_private)


@pytest.mark.parametrize(("url", "target"), PUBLIC.items())
def test_public_urls_pass_the_check(url: str, target: WebhookTarget) -> None:
    assert check_url(url, allow_private=False) == target


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://0177.0.0.1/", "0177.0.0.1 is a non-standard spelling of 127.0.0.1, a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1 (a loopback address)"),
        ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 form of 169.254.169.254 (a cloud metadata address)"),
        ("http://100.64.0.1/", "100.64.0.1 is a shared (CGNAT) address"),
        ("http://[fe80::1]/", "fe80::1 is a link-local address"),
        ("http://localhost/", "localhost always names a loopback address"),
        ("ftp://example.com/", "must use http or https, not 'ftp'"),
        ("http://u:p@example.com/", "must not carry a user name or password"),
        ("http://example.com:0/", "port must be 1..65535"),
        ("http://example.com/" + "a" * 2048, "longer than 2048 characters"),
        ("http://1572395042/", "non-standard spelling of 93.184.216.34; write it as 93.184.216.34"),
    ],
)
def test_refusals_say_why(url: str, message: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "http://[::1]:9/", "http://10.1.2.3/", "http://100.64.0.1/", "http://localhost/"],
)
def test_allow_private_lets_loopback_and_private_through(url: str) -> None:
    assert check_url(url, allow_private=True).host in url


@pytest.mark.parametrize(
    "url",
    [
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://169.254.169.254/",
        "http://100.100.100.200/",
        "http://[fe80::1]/",
        "http://2130706433/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_allow_private_still_refuses_unspecified_multicast_metadata_and_odd_spellings(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl):
        check_url(url, allow_private=True)


def test_refusal_unwraps_teredo_and_accepts_public_6to4() -> None:
    # Teredo server 65.54.227.120, client 127.0.0.1 (stored XOR-ed in the last 32 bits).
    teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:80ff:fffe")
    assert refusal(teredo, allow_private=False) == "the Teredo form of 127.0.0.1 (a loopback address)"
    assert refusal(ipaddress.IPv6Address("2002:5db8:d822::1"), allow_private=False) is None  # 93.184.216.34
    assert refusal(ipaddress.IPv4Address("8.8.8.8"), allow_private=False) is None


def test_the_whole_corpus_is_refused() -> None:
    refused = 0
    for url in NON_PUBLIC + MALFORMED:
        try:
            check_url(url, allow_private=False)
        except UnsafeWebhookUrl:
            refused += 1
    assert refused == len(NON_PUBLIC) + len(MALFORMED)


def fake_getaddrinfo(answers: dict[str, list[str]], calls: list[str]) -> Callable[..., list[Any]]:
    """A getaddrinfo that answers from a table (TCP tuples, as the real one returns them)."""

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        calls.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in answers[host]
        ]

    return getaddrinfo


NAMES = {
    "hooks.example.com": ["93.184.216.34", "2606:2800::1", "93.184.216.34"],
    "rebind.example.com": ["93.184.216.34", "10.0.0.1"],
    "loop.example.com": ["127.0.0.1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "meta.example.com": ["169.254.169.254"],
    "scoped.example.com": ["fe80::1%1"],
    "zero.example.com": ["0.0.0.0"],
    "cgnat.example.com": ["100.64.0.1"],
    "empty.example.com": [],
}


@pytest.fixture
def resolver_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo(NAMES, calls))
    return calls


async def test_resolve_returns_every_address_once_when_all_are_public(resolver_calls: list[str]) -> None:
    target = check_url("https://hooks.example.com/in", allow_private=False)
    found = await resolve(target, allow_private=False)
    assert found == (ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("2606:2800::1"))
    assert resolver_calls == ["hooks.example.com"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rebind.example.com", "resolves to 10.0.0.1, which is a private address"),
        ("loop.example.com", "resolves to 127.0.0.1, which is a loopback address"),
        ("mapped.example.com", "IPv4-mapped form of 127.0.0.1"),
        ("meta.example.com", "which is a cloud metadata address"),
        ("scoped.example.com", "which is a scoped IPv6 address"),
        ("zero.example.com", "which is the unspecified address"),
        ("cgnat.example.com", "which is a shared \\(CGNAT\\) address"),
    ],
)
async def test_names_that_resolve_to_non_public_addresses_are_refused(
    resolver_calls: list[str], name: str, message: str
) -> None:
    target = check_url(f"http://{name}/", allow_private=False)
    with pytest.raises(UnsafeWebhookUrl, match=message):
        await resolve(target, allow_private=False)


async def test_allow_private_accepts_resolved_loopback_but_not_unspecified(resolver_calls: list[str]) -> None:
    loop = check_url("http://loop.example.com/", allow_private=True)
    assert await resolve(loop, allow_private=True) == (ipaddress.IPv4Address("127.0.0.1"),)
    zero = check_url("http://zero.example.com/", allow_private=True)
    with pytest.raises(UnsafeWebhookUrl, match="unspecified"):
        await resolve(zero, allow_private=True)


async def test_unknown_or_empty_names_raise_gaierror(resolver_calls: list[str]) -> None:
    with pytest.raises(socket.gaierror):
        await resolve(check_url("http://nowhere.example.com/", allow_private=False), allow_private=False)
    with pytest.raises(socket.gaierror, match=r"empty\.example\.com has no addresses"):
        await resolve(check_url("http://empty.example.com/", allow_private=False), allow_private=False)


async def test_ip_literals_resolve_without_asking_the_resolver(resolver_calls: list[str]) -> None:
    target = check_url("http://93.184.216.34:8080/", allow_private=False)
    assert await resolve(target, allow_private=False) == (ipaddress.IPv4Address("93.184.216.34"),)
    assert resolver_calls == []


async def test_resolve_refuses_localhost_even_when_the_check_was_skipped() -> None:
    target = WebhookTarget(scheme="http", host="localhost", port=80, path="/")
    with pytest.raises(UnsafeWebhookUrl, match="which is a loopback address"):
        await resolve(target, allow_private=False)
    found = await resolve(target, allow_private=True)
    assert found
    assert all(ip.is_loopback for ip in found)


async def test_a_slow_resolver_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: Any, **kwargs: Any) -> list[Any]:
        time.sleep(0.3)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    target = check_url("http://slow.example.com/", allow_private=False)
    with pytest.raises(TimeoutError):
        await resolve(target, allow_private=False, timeout_s=0.05)
