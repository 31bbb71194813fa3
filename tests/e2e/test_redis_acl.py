"""Redis users per role (ops/redis): inferq's real processes do their jobs under their own users, and nothing else.

redis-server runs ops/redis/redis.conf itself (only port, dir and aclfile overridden) with the ACL file that
``inferq redis acl`` renders from ops/redis/users.acl.template. The test appends one superuser, ``probe``, for the
harness's readiness checks and to prove every refused command well-formed; each role is checked on its own user.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from faults.harness import BASE_ENV, Stack, eventually
from faults.models import affine_model
from faults.test_jobs_kit import WEBHOOK_ENV, WORKER_ENV, Receiver, secret, submit, wait_terminal
from redis.exceptions import AuthenticationError, NoPermissionError

from inferq.contracts.names import Names
from inferq.embedded.redis_server import free_port
from inferq.settings import Settings
from inferq.streams.acl import hashed, password_variable

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "ops" / "redis" / "redis.conf"
PRODUCERS = ("billing", "fraud")
USERS = ("api", "worker", "tasks", "admin", "scaler", *(f"producer-{p}" for p in PRODUCERS))
PREFIX = f"iqacl-{secrets.token_hex(3)}"
MODEL = "iris"  # examples/producer.py asks for "iris"; each test's database is its own
REFUSED = "This user has no permissions"


def password_env(passwords: Mapping[str, str], previous: Mapping[str, str] | None = None) -> dict[str, str]:
    """``REDIS_ACL_PASSWORD_*`` for ``passwords`` (by user name), with ``…_PREVIOUS`` for ``previous``."""
    env = {password_variable(user.replace("producer-", "producer_")): pw for user, pw in passwords.items()}
    for user, pw in (previous or {}).items():
        env[password_variable(user.replace("producer-", "producer_")) + "_PREVIOUS"] = pw
    return env


def run_renderer(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``inferq redis acl --producers billing,fraud --out OUT`` as a process, for PREFIX."""
    return subprocess.run(
        [sys.executable, "-m", "inferq", "redis", "acl", "--producers", ",".join(PRODUCERS), "--out", str(out)],
        env={**BASE_ENV, "INFERQ_KEY_PREFIX": PREFIX, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


class AclRedis:
    """redis-server with ops/redis/redis.conf and a rendered ACL file plus ``probe``; quacks like the harness's
    ``EmbeddedRedis`` for ``Stack`` (``url`` is probe's)."""

    def __init__(self, root: Path, *, aclfile: Path, probe: str) -> None:
        self.data_dir = root
        self.aclfile = aclfile
        self.probe = probe
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def url_for(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        return self.url_for("probe", self.probe)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> AclRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server", str(CONF), "--port", str(self.port), "--dir", str(self.data_dir), "--aclfile",
            str(self.aclfile),
        ]  # fmt: skip
        with (self.data_dir / "server.log").open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError((self.data_dir / "server.log").read_text()[-3000:])
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(f"AUTH probe {self.probe}\r\nPING\r\n".encode())
                return sock.recv(64).startswith(b"+OK\r\n")
        except OSError:
            return False


class Acl:
    """The rendered file (probe appended) and every user's password."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "users.acl"
        self.passwords = {user: secrets.token_hex(16) for user in USERS}
        self.probe = secrets.token_hex(16)

    def render(self, passwords: Mapping[str, str] | None = None, previous: Mapping[str, str] | None = None) -> str:
        done = run_renderer(self.path, password_env(passwords or self.passwords, previous))
        assert done.returncode == 0, done.stderr
        text = self.path.read_text()
        self.path.write_text(text + f"user probe on {hashed(self.probe)} ~* &* +@all\n")
        return text

    def server(self, name: str) -> AclRedis:
        return AclRedis(self.root / name, aclfile=self.path, probe=self.probe).start()

    def url(self, server: AclRedis, user: str) -> str:
        return server.url_for(user, self.passwords[user])


@pytest.fixture(scope="module")
def acl(tmp_path_factory: pytest.TempPathFactory) -> Acl:
    rendered = Acl(tmp_path_factory.mktemp("acl"))
    text = rendered.render()
    assert not any(pw in text for pw in rendered.passwords.values())  # hashes only
    return rendered


@pytest.fixture(scope="module")
def server(acl: Acl) -> Iterator[AclRedis]:
    started = acl.server("matrix")
    yield started
    started.stop()


@pytest.fixture
async def admin(acl: Acl, server: AclRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(acl.url(server, "admin"), decode_responses=True)
    yield client
    await client.aclose()


# -- what each role may do, and a sample of what it may not -----------------------------------------------------

NAMES = Names(PREFIX)
PART = NAMES.partition(MODEL, 1)
WORK, BULK, DLQ = NAMES.work_stream(PART), NAMES.bulk_stream(PART), NAMES.dead_letters(PART)
RATE, ALIVE, RESULT = NAMES.rate(PART), NAMES.alive(PART), NAMES.result("0123abcd")
INGRESS, OTHER_INGRESS = NAMES.ingress_stream("billing"), NAMES.ingress_stream("fraud")
REPLIES, OTHER_REPLIES = NAMES.producer_replies("billing"), NAMES.producer_replies("fraud")
API_CHANNEL = NAMES.reply_channel("api-0123456789ab")
TASKS = f"{PREFIX}:tasks"
QUOTA, IN_FLIGHT = NAMES.quota("0123456789abcdef"), NAMES.in_flight("0123456789abcdef")  # an API key's quota state
CACHE = NAMES.result_cache(PART, "default", "ab" * 32)  # a cached answer (the result cache)
REVISION, CHANGES = NAMES.catalog_revision(), NAMES.catalog_channel()  # registry changes announced
FOREIGN = Names("other").work_stream(PART)  # another deployment's prefix
JOB = "arq:job:deliver:d1:1"

Command = tuple[str, ...]


def cmd(text: str) -> Command:
    return tuple(text.split())


# Nobody: server administration, the whole keyspace, another deployment's keys and channels.
NOBODY: list[Command] = [
    cmd("FLUSHALL"), cmd("FLUSHDB"), cmd("CONFIG SET appendonly no"), cmd("CONFIG GET *"), cmd("KEYS *"),
    cmd("SCAN 0"), cmd("DEBUG SLEEP 0"), cmd("SHUTDOWN NOSAVE"), cmd("MONITOR"), cmd("CLIENT LIST"),
    cmd("CLIENT KILL ID 1"), cmd("ACL SETUSER eve on >x +@all ~*"), cmd("ACL SAVE"), cmd("MODULE LOAD /x.so"),
    cmd("SCRIPT FLUSH"), cmd("FUNCTION FLUSH"), cmd("BGSAVE"), cmd("BGREWRITEAOF"), cmd("REPLICAOF 10.0.0.1 6379"),
    cmd("SWAPDB 0 1"), cmd(f"XTRIM {WORK} MAXLEN 0"), cmd(f"XGROUP DESTROY {WORK} workers"),
    cmd(f"XGROUP SETID {WORK} workers 0"), cmd(f"XADD {FOREIGN} * m x"), cmd(f"XLEN {FOREIGN}"),
    cmd("GET other:result:x"), cmd("PSUBSCRIBE *"), cmd("SUBSCRIBE other:reply:api-x"),
    cmd(f"RENAME {WORK} {FOREIGN}"), cmd(f"OBJECT ENCODING {WORK}"),
]  # fmt: skip

ALLOWED: dict[str, list[Command]] = {
    "api": [
        cmd("PING"), cmd("INFO persistence"), cmd("TIME"), cmd(f"EVAL x 2 {WORK} {RATE}"), cmd(f"EVALSHA 0 1 {RESULT}"),
        cmd("SCRIPT LOAD x"), cmd(f"GET {RESULT}"), cmd(f"SET {RESULT} x NX EX 9"), cmd(f"EXPIRE {RESULT} 9"),
        cmd(f"XPENDING {WORK} workers - + 1"), cmd(f"EXISTS {ALIVE}"), cmd(f"XADD {BULK} * m x"),
        cmd(f"XLEN {WORK}"), cmd(f"XLEN {DLQ}"), cmd(f"XINFO GROUPS {WORK}"), cmd(f"XRANGE {BULK} - + COUNT 1"),
        cmd(f"HGETALL {RATE}:workers"),
        cmd(f"SUBSCRIBE {API_CHANNEL}"), cmd(f"WATCH {JOB}"), cmd(f"EXISTS {JOB} arq:result:deliver:d1:1"),
        cmd(f"PSETEX {JOB} 9 x"), cmd(f"ZADD {TASKS} 1 deliver:d1:1"), cmd("MULTI"), cmd("EXEC"), cmd("UNWATCH"),
        # per-key quotas: the admission script (4 keys) and the other routes' GCRA script, and what they call
        cmd(f"EVAL x 4 {WORK} {RATE} {QUOTA} {IN_FLIGHT}"), cmd(f"EVALSHA 0 1 {QUOTA}"), cmd(f"GET {QUOTA}"),
        cmd(f"SET {QUOTA} 1 PX 9"), cmd(f"ZREMRANGEBYSCORE {IN_FLIGHT} -inf 9"), cmd(f"ZCARD {IN_FLIGHT}"),
        cmd(f"ZADD {IN_FLIGHT} 9 r1"), cmd(f"PTTL {IN_FLIGHT}"), cmd(f"PEXPIREAT {IN_FLIGHT} 9"),
        cmd(f"EVAL x 2 {CACHE} {QUOTA}"), cmd(f"GET {CACHE}"),  # the result cache's lookup (spends the quota on a hit)
        # registry changes: watched (GET, SUBSCRIBE) and announced after a model route wrote (INCR, PUBLISH)
        cmd(f"GET {REVISION}"), cmd(f"SUBSCRIBE {CHANGES}"), cmd(f"INCR {REVISION}"), cmd(f"PUBLISH {CHANGES} m"),
    ],
    "worker": [
        cmd("PING"), cmd("INFO memory"), cmd("TIME"), cmd(f"XGROUP CREATE {WORK} workers 0 MKSTREAM"),
        cmd(f"XREADGROUP GROUP workers c COUNT 1 BLOCK 1 STREAMS {WORK} {BULK} > >"), cmd(f"XACK {BULK} workers 1-1"),
        cmd(f"XDEL {WORK} 1-1"), cmd(f"XAUTOCLAIM {WORK} workers c 1 0-0"),
        cmd(f"XCLAIM {BULK} workers c 0 1-1 JUSTID"),
        cmd(f"XINFO CONSUMERS {WORK} workers"), cmd(f"XGROUP DELCONSUMER {WORK} workers c"),
        cmd(f"XADD {DLQ} MAXLEN ~ 9 * m x"), cmd(f"EVAL x 1 {RESULT}"), cmd(f"PUBLISH {API_CHANNEL} x"),
        cmd(f"XADD {REPLIES} MAXLEN ~ 9 * m x"), cmd(f"EVALSHA 0 3 {RATE} {RATE}:workers {ALIVE}"),
        cmd(f"HSET {RATE}:workers c 1"), cmd(f"DEL {ALIVE}"), cmd(f"XREADGROUP GROUP forwarder c STREAMS {INGRESS} >"),
        cmd(f"XADD {INGRESS}:dlq * m x"), cmd(f"EVAL x 3 {WORK} {RATE} {NAMES.prefix}:{{{PART}}}:fwd:billing:1-1"),
        cmd(f"PSETEX {JOB} 9 x"), cmd(f"ZADD {TASKS} 1 deliver:d1:1"),
        cmd(f"ZREM {IN_FLIGHT} r1"),  # a stored result frees its API key's in-flight slot
        cmd(f"SET {CACHE} x PX 9"),  # a cacheable result is kept for its TTL
        cmd(f"GET {REVISION}"), cmd(f"SUBSCRIBE {CHANGES}"),  # registry changes, watched by the pool's discovery
    ],
    "tasks": [
        cmd("PING"), cmd("INFO server"), cmd("DBSIZE"), cmd(f"ZRANGEBYSCORE {TASKS} -inf 9 LIMIT 0 9"),
        cmd(f"ZSCORE {TASKS} x"), cmd(f"ZINCRBY {TASKS} 1 x"), cmd(f"ZCARD {TASKS}"),
        cmd(f"PSETEX {TASKS}:health-check 9 x"), cmd(f"DEL {TASKS}:health-check"),
        cmd("WATCH arq:in-progress:x"), cmd("PSETEX arq:in-progress:x 9 1"), cmd(f"GET {JOB}"),
        cmd("INCRBY arq:retry:x 1"),
        cmd("SETEX arq:retry:x 9 1"), cmd("SET arq:result:x v PX 9"), cmd("ZREM arq:abort x"),
        cmd(f"DEL arq:retry:x {JOB}"), cmd(f"SET {PREFIX}:reconciler:requeue t NX PX 9"),
        cmd(f"EVALSHA 0 1 {PREFIX}:reconciler:requeue"), cmd(f"XRANGE {BULK} 1-1 1-1 COUNT 1"),
        cmd(f"XADD {BULK} * m x"),
    ],
    "admin": [
        cmd("PING"), cmd("INFO"), cmd(f"XRANGE {DLQ} - + COUNT 9"), cmd(f"XLEN {DLQ}"), cmd(f"XDEL {DLQ} 1-1"),
        cmd(f"DEL {DLQ}"), cmd(f"MGET {RESULT}"), cmd(f"SET {RESULT} x KEEPTTL"), cmd("MULTI"),
        cmd(f"XADD {WORK} * m x"), cmd(f"XADD {BULK} * m x"), cmd("EXEC"), cmd("ACL LOAD"), cmd("ACL LOG"),
        cmd("ACL DRYRUN api PING"), cmd("ACL LIST"), cmd("ACL WHOAMI"),
        cmd(f"INCR {REVISION}"), cmd(f"PUBLISH {CHANGES} m"),  # `inferq models import` announces the new version
    ],
    "scaler": [
        cmd("PING"), cmd(f"XINFO GROUPS {WORK}"), cmd(f"XINFO GROUPS {BULK}"), cmd(f"XPENDING {BULK} workers"),
        cmd(f"XPENDING {WORK} workers - + 9"), cmd(f"XLEN {WORK}"), cmd("INFO"),  # KEDA's lagCount asks INFO first
    ],
    "producer-billing": [
        cmd("PING"), cmd(f"XADD {INGRESS} * m x"), cmd(f"XGROUP CREATE {REPLIES} me $ MKSTREAM"),
        cmd(f"XREADGROUP GROUP me c COUNT 9 BLOCK 9 STREAMS {REPLIES} >"), cmd(f"XACK {REPLIES} me 1-1"),
    ],
}  # fmt: skip

REFUSED_TO: dict[str, list[Command]] = {
    "api": [
        cmd(f"XREADGROUP GROUP workers c STREAMS {WORK} >"), cmd(f"XACK {WORK} workers 1-1"), cmd(f"XDEL {WORK} 1-1"),
        cmd(f"DEL {WORK}"), cmd(f"XADD {DLQ} * m x"), cmd(f"SET {ALIVE} x"), cmd(f"XADD {INGRESS} * m x"),
        cmd(f"XADD {REPLIES} * m x"), cmd(f"PUBLISH {API_CHANNEL} x"), cmd(f"SUBSCRIBE {REPLIES}"),
        cmd(f"ZRANGEBYSCORE {TASKS} -inf +inf"), cmd("GET arq:in-progress:x"), cmd(f"GET {PREFIX}:reconciler:requeue"),
        cmd(f"HSET {RATE}:workers c 1"), cmd(f"XINFO STREAM {WORK}"),
        cmd(f"ZREM {IN_FLIGHT} r1"), cmd(f"DEL {QUOTA}"),  # only a worker frees a slot; nobody resets a quota
        cmd(f"SET {REVISION} 1"), cmd(f"DEL {REVISION}"),  # the revision only ever moves forward
    ],
    "worker": [
        cmd(f"SUBSCRIBE {API_CHANNEL}"), cmd(f"XRANGE {DLQ} - +"), cmd(f"XREADGROUP GROUP me c STREAMS {REPLIES} >"),
        cmd(f"ZRANGEBYSCORE {TASKS} -inf +inf"), cmd("GET arq:in-progress:x"), cmd("ZREM arq:abort x"),
        cmd(f"PUBLISH {REPLIES} x"), cmd(f"DEL {PREFIX}:reconciler:requeue"),
        # the in-flight set is write-only to it (ZREM; NOTE: %W lets its other write commands in too, DEL, ZADD…);
        # the rate state is not its at all
        cmd(f"ZCARD {IN_FLIGHT}"), cmd(f"ZRANGE {IN_FLIGHT} 0 -1"), cmd(f"GET {QUOTA}"), cmd(f"SET {QUOTA} 1"),
        cmd(f"GET {CACHE}"),  # the cache is write-only to it
        cmd(f"INCR {REVISION}"), cmd(f"PUBLISH {CHANGES} m"), cmd(f"SET {REVISION} 1"),  # it only watches changes
    ],
    "tasks": [
        cmd(f"XADD {WORK} * m x"), cmd(f"XREADGROUP GROUP workers c STREAMS {BULK} >"), cmd(f"GET {RESULT}"),
        cmd(f"XADD {INGRESS} * m x"), cmd(f"PUBLISH {API_CHANNEL} x"), cmd(f"SUBSCRIBE {API_CHANNEL}"),
        cmd(f"EVAL x 1 {TASKS}"), cmd(f"XRANGE {DLQ} - +"), cmd("ZRANGE arq:abort 0 -1"),
        cmd(f"GET {QUOTA}"), cmd(f"ZREM {IN_FLIGHT} r1"),
    ],
    "admin": [
        cmd(f"XREADGROUP GROUP workers c STREAMS {WORK} >"), cmd(f"XRANGE {WORK} - +"), cmd(f"DEL {WORK}"),
        cmd(f"XDEL {BULK} 1-1"),
        cmd(f"SUBSCRIBE {API_CHANNEL}"), cmd(f"PUBLISH {API_CHANNEL} x"), cmd(f"XADD {INGRESS} * m x"),
        cmd(f"GET {JOB}"), cmd(f"ZADD {TASKS} 1 x"), cmd("ACL DELUSER api"), cmd("CONFIG REWRITE"),
        cmd(f"XADD {DLQ} * m x"), cmd(f"SET {WORK} x"),
        cmd(f"EVAL x 1 {DLQ}"), cmd(f"DEL {QUOTA}"), cmd(f"SET {QUOTA} 0"), cmd(f"DEL {IN_FLIGHT}"),
        cmd(f"SUBSCRIBE {CHANGES}"), cmd(f"SET {REVISION} 1"),
    ],
    "scaler": [
        cmd(f"XRANGE {WORK} - + COUNT 1"), cmd(f"XINFO STREAM {WORK}"),
        cmd(f"XREADGROUP GROUP workers c STREAMS {WORK} >"), cmd(f"XADD {WORK} * m x"), cmd(f"XLEN {DLQ}"),
        cmd(f"GET {RESULT}"), cmd(f"HGETALL {RATE}:workers"),
        cmd(f"XLEN {INGRESS}"), cmd(f"XINFO CONSUMERS {WORK} workers"), cmd(f"SUBSCRIBE {API_CHANNEL}"),
        cmd(f"ZCARD {IN_FLIGHT}"),
    ],
    "producer-billing": [
        cmd(f"XADD {WORK} MAXLEN 0 * m x"), cmd(f"XADD {WORK} * m x"), cmd(f"XADD {BULK} * m x"),
        cmd(f"XADD {OTHER_INGRESS} * m x"), cmd(f"XREADGROUP GROUP me c STREAMS {OTHER_REPLIES} >"),
        cmd(f"XGROUP CREATE {OTHER_REPLIES} me $ MKSTREAM"), cmd(f"XREADGROUP GROUP forwarder c STREAMS {INGRESS} >"),
        cmd(f"XACK {INGRESS} forwarder 1-1"), cmd(f"XGROUP CREATE {INGRESS} mine 0"), cmd(f"XRANGE {INGRESS} - +"),
        cmd(f"XADD {INGRESS}:dlq * m x"), cmd(f"XADD {REPLIES} * m x"), cmd(f"XGROUP DESTROY {REPLIES} me"),
        cmd(f"DEL {INGRESS}"), cmd(f"GET {RESULT}"), cmd(f"XLEN {WORK}"), cmd(f"SUBSCRIBE {API_CHANNEL}"),
        cmd(f"PUBLISH {API_CHANNEL} x"), cmd(f"EVAL x 1 {INGRESS}"), cmd("INFO"), cmd(f"XINFO STREAM {INGRESS}"),
        cmd(f"EVAL x 1 {QUOTA}"), cmd(f"ZREM {IN_FLIGHT} r1"), cmd(f"SET {CACHE} x"), cmd(f"GET {CACHE}"),
    ],
}  # fmt: skip


async def dryrun(admin: aioredis.Redis, user: str, command: Command) -> str:
    return str(await admin.execute_command("ACL", "DRYRUN", user, *command))


@pytest.mark.parametrize("user", list(ALLOWED))
async def test_each_role_may_run_exactly_its_commands(user: str, admin: aioredis.Redis) -> None:
    """ACL DRYRUN (as admin): every command the role sends is allowed; everyone's and the role's refused ones
    are refused — and are allowed to the superuser, so each refusal is the ACL's, not a malformed command's."""
    allowed = {" ".join(c): await dryrun(admin, user, c) for c in ALLOWED[user]}
    assert {c: r for c, r in allowed.items() if r != "OK"} == {}
    refused = [*NOBODY, *REFUSED_TO[user]]
    answers = {" ".join(c): await dryrun(admin, user, c) for c in refused}
    assert [c for c, r in answers.items() if not r.startswith(REFUSED)] == []
    assert {" ".join(c): r for c in refused if (r := await dryrun(admin, "probe", c)) != "OK"} == {}


async def test_refusals_on_real_connections(acl: Acl, server: AclRedis, admin: aioredis.Redis) -> None:
    """NOPERM from the server itself: a producer cannot wipe a work stream, write another producer's ingress,
    listen to an API's replies or flush; no role may flush or reconfigure; the default user is off."""
    probe = aioredis.Redis.from_url(server.url, decode_responses=True)
    producer = aioredis.Redis.from_url(acl.url(server, "producer-billing"))
    try:
        await probe.delete(WORK)
        await probe.xadd(WORK, {"m": b"queued work"})
        with pytest.raises(NoPermissionError):
            await producer.xadd(WORK, {"m": b"x"}, maxlen=0)
        with pytest.raises(NoPermissionError):
            await producer.xtrim(WORK, maxlen=0)
        with pytest.raises(NoPermissionError):
            await producer.xadd(OTHER_INGRESS, {"m": b"x"})
        with pytest.raises(NoPermissionError):
            await producer.execute_command("SUBSCRIBE", API_CHANNEL)
        assert await probe.xlen(WORK) == 1  # untouched
        assert await producer.xadd(INGRESS, {"m": b"x"})  # its own ingress: allowed
        for user in USERS:
            client = aioredis.Redis.from_url(acl.url(server, user))
            try:
                assert await client.ping()
                for command in (("FLUSHALL",), ("CONFIG", "SET", "appendonly", "no"), ("KEYS", "*")):
                    with pytest.raises(NoPermissionError):
                        await client.execute_command(*command)
            finally:
                await client.aclose()
        anonymous = aioredis.Redis(port=server.port)
        with pytest.raises(AuthenticationError):  # NOAUTH: the default user is off
            await anonymous.ping()
        await anonymous.aclose()
        as_default = aioredis.Redis(port=server.port, username="default", password="anything")
        with pytest.raises(AuthenticationError):  # WRONGPASS: off, whatever the password
            await as_default.ping()
        await as_default.aclose()
        assert await probe.xlen(WORK) == 1
        assert await probe.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        await probe.delete(WORK, INGRESS)
        await producer.aclose()
        await probe.aclose()


# -- the real processes, each under its own user --------------------------------------------------------------


async def run_cli(args: Sequence[str], env: dict[str, str]) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inferq", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def run_producer(url: str) -> dict[str, Any]:
    """examples/producer.py, unchanged, as ``producer-billing``: its reply, decoded."""
    env = {**BASE_ENV, "INFERQ_REDIS_URL": url, "INFERQ_KEY_PREFIX": PREFIX, "PRODUCER": "billing"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "producer.py"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    reply: dict[str, Any] = json.loads(out)
    return reply


async def refusals(admin: aioredis.Redis) -> list[dict[str, Any]]:
    """ACL LOG: every command refused to anyone since the server started."""
    entries: list[dict[str, Any]] = await admin.acl_log()
    return entries


async def test_every_role_does_its_job_under_its_own_user(
    acl: Acl, fresh_database: str, settings: Settings, tmp_path: Path
) -> None:
    """serve answers a sync predict that worker runs (spending and freeing its API key's quota), and reports the
    backlog; a job's webhooks are delivered by tasks; the producer gets its reply; admin lists, replays and purges
    a dead letter; nothing any of them sent was refused; and after ACL LOAD (which drops every connection) they
    all carry on."""
    redis = acl.server("stack")
    assert settings.auth.api_key_pepper
    admin = aioredis.Redis.from_url(acl.url(redis, "admin"), decode_responses=True)
    try:
        stack = await Stack.open(
            tmp_path,
            fresh_database,
            pepper=settings.auth.api_key_pepper,
            redis=redis,  # type: ignore[arg-type]
            prefix=PREFIX,
        )
    except BaseException:
        await admin.aclose()
        redis.stop()
        raise
    key_id = stack.key[3:19]
    try:
        version = await stack.register(affine_model(), name=MODEL)
        part = stack.partition(version)
        api = stack.serve(INFERQ_REDIS_URL=acl.url(redis, "api"), **WEBHOOK_ENV)
        worker = stack.worker(
            [version], INFERQ_REDIS_URL=acl.url(redis, "worker"), INFERQ_PRODUCERS="billing,fraud", **WORKER_ENV
        )
        tasks = stack.tasks(INFERQ_REDIS_URL=acl.url(redis, "tasks"), **WEBHOOK_ENV)
        await asyncio.gather(stack.api_ready(api), stack.worker_ready(worker, version), stack.tasks_ready(tasks))
        producer = asyncio.create_task(run_producer(acl.url(redis, "producer-billing")))

        async with api.client(timeout_s=30) as http, Receiver(lambda _id, _nth: 204) as receiver:
            predicted = await http.post(f"/v1/models/{MODEL}/predict", json={"inputs": [[1, 2, 3, 4]]})
            assert predicted.status_code == 200, predicted.text
            assert predicted.json()["predictions"][0]["outputs"]["y"] == [3.0, 5.0, 7.0, 9.0]
            probe = stack.client()
            assert await probe.exists(NAMES.quota(key_id)) == 1  # the admission script spent the key's rate

            async def slot_freed() -> bool:  # the worker's ZREM, under its own user
                return int(await probe.zcard(NAMES.in_flight(key_id))) == 0

            await eventually(slot_freed, 10, "the worker to free the prediction's in-flight slot")
            backlog = await http.get("/health/backlog")  # what KEDA scales on: read by the api user
            assert backlog.status_code == 200, backlog.text
            assert [(p["partition"], p["consumers"]) for p in backlog.json()["partitions"]] == [(version.key, 1)]
            assert f'inferq_stream_consumers{{partition="{version.key}"}} 1.0' in (await http.get("/metrics")).text

            receiver.secret = await secret(api)
            job = await submit(http, MODEL, 5, webhook=receiver.url)
            done, _ = await wait_terminal(http, job["id"], 30)
            assert done["status"] == "succeeded"

            async def delivered() -> bool:
                return {(h.type, h.verified) for h in receiver.of(job["id"])} == {
                    ("job.started", True), ("job.succeeded", True)
                }  # fmt: skip

            await eventually(delivered, 30, "both webhooks delivered by inferq tasks")

        reply = await producer
        assert (reply["status"], reply["model"]) == ("succeeded", MODEL)
        assert reply["id"].startswith("billing:")

        # admin: a message no worker can decode is dead-lettered; the operator lists, replays and purges it.
        probe = stack.client()
        await probe.xadd(part.work, {"m": b"not msgpack"})
        await eventually(lambda: _xlen(probe, part.dlq, 1), 30, "the undecodable entry dead-lettered")
        env = stack.env(INFERQ_REDIS_URL=acl.url(redis, "admin"))
        [listed] = await run_cli(["dlq", "list", version.key], env)
        assert listed["reason"].startswith("undecodable message")
        [replayed] = await run_cli(["dlq", "replay", version.key], env)
        assert replayed["id"] == listed["id"]

        async def dead_again() -> bool:
            return [e for e, _ in await probe.xrange(part.dlq)] not in ([], [listed["id"].encode()])

        await eventually(dead_again, 30, "the replayed entry dead-lettered again")
        assert (await run_cli(["dlq", "purge", version.key], env))["purged"] == 1
        assert await probe.xlen(part.dlq) == 0

        assert await refusals(admin) == []  # no role was refused anything it sent
        assert [e for e in api.proc.events() if e.get("event") == "quota.unchecked"] == []  # every route metered

        # ACL LOAD (as after a rotation) drops every connection: each role reconnects and carries on.
        # NOTE: a result published while the API's listener reconnects is missed (pub/sub is at-most-once) and its
        # caller answered when its wait runs out: short waits keep this loop short.
        assert await admin.execute_command("ACL", "LOAD") == "OK"
        async with api.client(timeout_s=30) as http:

            async def predicts() -> bool:
                response = await http.post(
                    f"/v1/models/{MODEL}/predict", json={"inputs": [[1, 1, 1, 1]]}, headers={"Prefer": "wait=2"}
                )
                assert response.status_code in (200, 202, 503), response.text
                return response.status_code == 200

            await eventually(predicts, 30, "a prediction after ACL LOAD")
        assert (await run_producer(acl.url(redis, "producer-billing")))["status"] == "succeeded"
        assert await refusals(admin) == []
        assert all(p.alive() for p in (api.proc, worker, tasks))
    finally:
        await admin.aclose()
        await stack.close()


async def _xlen(redis: aioredis.Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) == n


async def test_a_password_is_rotated_with_two_passwords_and_acl_load(acl: Acl, tmp_path: Path) -> None:
    """Render with the new password and the old as ``…_PREVIOUS``: both work after ACL LOAD; render again
    without the old one: after ACL LOAD the old one is refused, the new one works."""
    rotating = Acl(tmp_path)
    rotating.render()
    redis = rotating.server("rotate")
    old, new = rotating.passwords["producer-fraud"], secrets.token_hex(16)
    try:

        async def auth(password: str) -> bool:
            client = aioredis.Redis(port=redis.port, username="producer-fraud", password=password)
            try:
                return bool(await client.ping())
            except AuthenticationError:
                return False
            finally:
                await client.aclose()

        async def load() -> None:
            client = aioredis.Redis(port=redis.port, username="admin", password=rotating.passwords["admin"])
            try:
                assert await client.execute_command("ACL", "LOAD") == b"OK"
            finally:
                await client.aclose()

        assert (await auth(old), await auth(new)) == (True, False)
        rotating.render({**rotating.passwords, "producer-fraud": new}, previous={"producer-fraud": old})
        await load()
        assert (await auth(old), await auth(new)) == (True, True)
        rotating.render({**rotating.passwords, "producer-fraud": new})
        await load()
        assert (await auth(old), await auth(new)) == (False, True)
    finally:
        redis.stop()


def test_redis_refuses_to_start_without_its_acl_file(tmp_path: Path) -> None:
    """redis.conf names an aclfile: a missing one stops Redis from starting (never an open default user)."""
    proc = subprocess.run(
        ["redis-server", str(CONF), "--port", str(free_port()), "--dir", str(tmp_path), "--aclfile",
         str(tmp_path / "missing.acl")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "missing.acl" in proc.stdout + proc.stderr
