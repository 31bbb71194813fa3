"""Bench plumbing: services, processes, API keys, wrk runs and CPU accounting (no figures are computed here)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from inferq.contracts.auth import SCOPES
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.keys import KeyHasher, KeyStore

# Per-key quotas, and the per-address bucket in front of key lookups, far above any bench load: the benches
# measure the queue path, not the limits (wrk's connections all miss a cold key cache at once, and each spends
# a token of that bucket).
QUOTA_ENV = {
    "INFERQ_KEY_RATE_PER_S": "1000000",
    "INFERQ_KEY_BURST": "1000000",
    "INFERQ_KEY_CONCURRENCY": "1000000",
    "INFERQ_AUTH_IP_RATE": "1000000",
    "INFERQ_AUTH_IP_BURST": "1000000",
}


def new_pepper() -> str:
    """A pepper of this run's own (``INFERQ_API_KEY_PEPPER`` of its API processes)."""
    return secrets.token_hex(32)


def auth_env(pepper: str) -> dict[str, str]:
    """What an ``inferq serve`` of the bench needs: the pepper its keys were made under, and no quotas in reach."""
    return {"INFERQ_API_KEY_PEPPER": pepper, **QUOTA_ENV}


async def make_key(database_url: str, pepper: str) -> str:
    """An API key for the ``default`` tenant with every scope, made in the bench's database."""
    engine = create_engine(database_url)
    try:
        keys = KeyStore(create_sessionmaker(engine), hasher=KeyHasher(pepper))
        return (await keys.create(tenant="default", scopes=SCOPES, name="bench")).key
    finally:
        await engine.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(args: Sequence[str], *, env: dict[str, str], log: Path) -> Iterator[psutil.Process]:
    """A child process (its own session), stopped with SIGTERM then SIGKILL on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(list(args), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield psutil.Process(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def wait_http(url: str, *, timeout: float = 60.0, headers: Mapping[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0, headers=headers).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    """User + system CPU of these processes and all their children, now."""
    total = 0.0
    for root in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(
    url: str,
    body: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    headers: Mapping[str, str] | None = None,
) -> WrkResult:
    """A closed-loop wrk run of POST ``body`` with ``connections`` concurrent connections, sending ``headers``
    (``-H``; the script's own ``wrk.headers`` add to them)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        # NOTE: a Lua long string with level 2: JSON bodies contain "]]", which would end a [[...]] string.
        script.write(
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{body}]==]\n'
        )
    given = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{int(seconds)}s", "--latency",
         *given, "-s", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return WrkResult(requests, rps, _percentile(out, "50%"), _percentile(out, "99%"), errors)


def _percentile(out: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def python() -> str:
    return sys.executable
