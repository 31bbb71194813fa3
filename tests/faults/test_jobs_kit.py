"""Helpers for the batch-job fault tests (no tests here): a deep model, a webhook receiver, the job's rows in
Postgres, the bulk lane, and a lock that holds a worker's transaction open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import numpy as np
import onnxruntime as ort
import redis.asyncio as aioredis
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy.engine import make_url
from standardwebhooks import Webhook, WebhookVerificationError

from inferq.streams.partition import Partition

from .harness import Api, Stack, eventually
from .models import build

WIDTH = 4  # model inputs per row: job bodies stay small
TERMINAL = ("succeeded", "failed", "canceled", "expired")

# Settings shared by the job fault tests. Workers: fast reclaim, heartbeats while a chunk runs.
WORKER_ENV: dict[str, int] = {
    "INFERQ_THREAD_CROSSOVER_ROWS": 1,
    "INFERQ_HEARTBEAT_MS": 200,
    "INFERQ_RECLAIM_MIN_IDLE_MS": 1500,
    "INFERQ_RECLAIM_INTERVAL_MS": 200,
    "INFERQ_RESTART_BACKOFF_MS": 100,
    "INFERQ_BLOCK_MS": 200,
}
# Webhooks to the test's own loopback receiver; retries after milliseconds; a reconciler pass every 0.2 s.
WEBHOOK_ENV: dict[str, object] = {
    "INFERQ_WEBHOOK_ALLOW_PRIVATE": "true",
    "INFERQ_WEBHOOK_RETRY_SCALE": 0.001,
    "INFERQ_WEBHOOK_TIMEOUT_S": 5,
    "INFERQ_RECONCILE_INTERVAL_S": 0.2,
}


def deep_model(*, width: int = 1024, depth: int = 40) -> bytes:
    """``[None, 4] → [None, 1]`` through ``depth`` chained ``[width, width]`` MatMul + Tanh (one shared weight):
    a job's rows stay 4 numbers wide while each chunk costs a few hundred ms on one ORT thread."""
    rng = np.random.default_rng(1)
    shared = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    w_in = (rng.standard_normal((WIDTH, width)) / 2).astype(np.float32)
    w_out = (rng.standard_normal((width, 1)) / np.sqrt(width)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["h"]), helper.make_node("Tanh", ["h"], ["t"])]
    last = "t"
    for k in range(depth):
        nodes += [helper.make_node("MatMul", [last, "w"], [f"m{k}"]), helper.make_node("Tanh", [f"m{k}"], [f"t{k}"])]
        last = f"t{k}"
    nodes.append(helper.make_node("MatMul", [last, "w_out"], ["y"]))
    inits = [numpy_helper.from_array(a, n) for a, n in ((shared, "w"), (w_in, "w_in"), (w_out, "w_out"))]
    return build([("x", TensorProto.FLOAT, [None, WIDTH])], [("y", TensorProto.FLOAT, [None, 1])], nodes, inits)


def job_rows(n: int) -> tuple[list[list[float]], list[str]]:
    """``n`` distinct rows and their custom ids (``row-00000`` …)."""
    inputs = [[(i % 97) / 97, (i % 13) / 13, (i % 7) / 7, i / n] for i in range(n)]
    return inputs, [f"row-{i:05d}" for i in range(n)]


def custom_index(custom_id: str) -> int:
    return int(custom_id.removeprefix("row-"))


def runs_by_chunk(stack: Stack, job_id: str) -> dict[int, list[dict[str, Any]]]:
    """The run ledger's lines for the job's chunks (request id ``{job_id}:{seq}``), by seq."""
    runs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in stack.ledger_lines():
        owner, _, seq = line["id"].rpartition(":")
        if owner == job_id:
            runs[int(seq)].append(line)
    return runs


# -- the API ---------------------------------------------------------------------------------------


async def submit(
    http: httpx.AsyncClient, model: str, n: int, *, webhook: str | None = None, key: str | None = None
) -> dict[str, Any]:
    """``POST /v1/jobs`` with ``n`` inline rows (and a webhook on ``job.started`` + ``completed``); the job."""
    inputs, custom_ids = job_rows(n)
    body: dict[str, Any] = {"model": model, "inputs": inputs, "custom_ids": custom_ids}
    if webhook is not None:
        body["webhook"] = {"url": webhook, "events": ["job.started", "completed"]}
    headers = {"Idempotency-Key": key} if key else {}
    response = await http.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


async def job(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def wait_terminal(http: httpx.AsyncClient, job_id: str, timeout_s: float) -> tuple[dict[str, Any], float]:
    """The job once terminal, and the seconds it took from now."""
    found: dict[str, Any] = {}

    async def terminal() -> bool:
        found.update(await job(http, job_id))
        return found["status"] in TERMINAL

    took = await eventually(terminal, timeout_s, f"job {job_id} to end")
    return found, took


async def results_jsonl(http: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/jobs/{job_id}/results.jsonl")
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line]


def assert_each_row_once(lines: Sequence[dict[str, Any]], n: int) -> None:
    """``results.jsonl`` holds every row exactly once, succeeded, under its own custom id and index."""
    ids = Counter(line["custom_id"] for line in lines)
    assert len(lines) == n, f"{len(lines)} result lines for {n} rows"
    assert set(ids) == set(job_rows(n)[1])
    assert max(ids.values()) == 1, [i for i, c in ids.items() if c > 1][:10]
    assert sorted(line["index"] for line in lines) == list(range(n))
    assert all(custom_index(line["custom_id"]) == line["index"] for line in lines)
    assert {line["status"] for line in lines} == {"succeeded"}


def assert_predictions_exact(lines: Sequence[dict[str, Any]], *, model: bytes) -> None:
    """A sample of rows predicted here with ONNX Runtime: each stored result is its own row's."""
    sample = sorted(lines, key=lambda line: line["index"])[:: max(1, len(lines) // 25)]
    rows = job_rows(len(lines))[0]
    inputs = np.array([rows[line["index"]] for line in sample], np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    expected = ort.InferenceSession(model, options).run(None, {"x": inputs})[0]
    got = np.array([line["prediction"]["value"] for line in sample], np.float32).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


async def secret(api: Api) -> str:
    async with api.client() as http:
        response = await http.get("/v1/webhooks/secret")
    assert response.status_code == 200, response.text
    value: str = response.json()["secret"]
    return value


# -- the webhook receiver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """One webhook request as the receiver saw it, and the status it answered."""

    webhook_id: str
    type: str
    job_id: str
    at: float  # time.time() on arrival
    answered: int
    verified: bool


class Receiver:
    """An HTTP/1.1 endpoint on 127.0.0.1 that keeps every request; ``answer(webhook_id, nth)`` (``nth`` counts
    the requests carrying that id, from 1) decides the status. Signatures are checked with ``standardwebhooks``
    once ``secret`` is set."""

    def __init__(self, answer: Callable[[str, int], int]) -> None:
        self.answer = answer
        self.path = f"/hooks/{secrets.token_hex(4)}"
        self.hooks: list[Hook] = []
        self.secret: str | None = None
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()

    def of(self, job_id: str) -> list[Hook]:
        """The requests about ``job_id`` (a port reused from an earlier test could bring others)."""
        return [h for h in self.hooks if h.job_id == job_id]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not reader.at_eof():
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[1:]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                webhook_id = headers.get("webhook-id", "")
                nth = 1 + sum(h.webhook_id == webhook_id for h in self.hooks)
                status = self.answer(webhook_id, nth)
                event, verified = json.loads(body), self._verify(body, headers)
                self.hooks.append(Hook(webhook_id, event["type"], event["data"]["id"], time.time(), status, verified))
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _verify(self, body: bytes, headers: dict[str, str]) -> bool:
        if self.secret is None:
            return False
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True


def fail_first(_webhook_id: str, nth: int) -> int:
    """Every event's first attempt gets a 500, the next a 204."""
    return 500 if nth == 1 else 204


def by_event(hooks: Sequence[Hook]) -> dict[str, list[Hook]]:
    """Requests grouped by ``webhook-id``."""
    grouped: dict[str, list[Hook]] = {}
    for hook in hooks:
        grouped.setdefault(hook.webhook_id, []).append(hook)
    return grouped


# -- Postgres ----------------------------------------------------------------------------------------


def connect_args(database_url: str) -> dict[str, Any]:
    """asyncpg keywords for a ``postgresql://`` URL, unix-socket form (``?host=/dir``) included."""
    url = make_url(database_url)
    params: dict[str, Any] = url.translate_connect_args(username="user")
    if "host" in url.query:
        params["host"] = url.query["host"]
    return params


@dataclass(frozen=True)
class Chunk:
    seq: int
    status: str
    entry_id: str | None
    rows: int


@dataclass(frozen=True)
class Delivery:
    id: str
    event_id: str
    type: str
    status: str
    attempts: int
    next_at: float | None  # the next attempt, epoch seconds


class JobRows:
    """Reads a job's rows straight from Postgres: its events, chunks and deliveries (what the API hides)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    @contextlib.asynccontextmanager
    async def opened(cls, database_url: str) -> AsyncIterator[JobRows]:
        conn = await asyncpg.connect(**connect_args(database_url))
        try:
            yield cls(conn)
        finally:
            await conn.close()

    async def events(self, job_id: str) -> list[tuple[str, str]]:
        """``[(type, id), …]`` of the job's outbox events, oldest first."""
        rows = await self._conn.fetch(
            "SELECT type, id FROM job_events WHERE job_id = $1 ORDER BY created_at, type", job_id
        )
        return [(r["type"], r["id"]) for r in rows]

    async def chunks(self, job_id: str) -> list[Chunk]:
        rows = await self._conn.fetch(
            "SELECT seq, status, entry_id, row_count FROM job_chunks WHERE job_id = $1 ORDER BY seq", job_id
        )
        return [Chunk(r["seq"], r["status"], r["entry_id"], r["row_count"]) for r in rows]

    async def deliveries(self, job_id: str) -> list[Delivery]:
        rows = await self._conn.fetch(
            "SELECT d.id, d.event_id, e.type, d.status, d.attempts, extract(epoch FROM d.next_attempt_at) AS next_at"
            " FROM webhook_deliveries d JOIN job_events e ON e.id = d.event_id WHERE d.job_id = $1"
            " ORDER BY e.created_at, e.type",
            job_id,
        )
        return [Delivery(**{**dict(r), "next_at": _epoch(r["next_at"])}) for r in rows]

    async def jobs_with_key(self, key: str) -> list[str]:
        rows = await self._conn.fetch("SELECT id FROM jobs WHERE idempotency_key = $1", key)
        return [r["id"] for r in rows]


class TransactionHold:
    """Holds open, at a chosen statement, the transaction of another process, with no hook in inferq.

    ``install`` puts a trigger on ``table`` (``WHEN`` ``condition``) that first queues ``pg_notify(channel,
    payload)`` — delivered only when that transaction commits — then waits for an advisory lock this object
    holds. ``waiting()`` sees the blocked backend in ``pg_locks``; ``release()`` lets it go on (and commit).
    """

    def __init__(self, conn: asyncpg.Connection, *, name: str) -> None:
        self._conn = conn
        self.name = name
        self.channel = name
        self._keys = (secrets.randbelow(2**31), secrets.randbelow(2**31))
        self._triggers: list[str] = []

    async def install(self, *, table: str, condition: str, payload: str) -> None:
        k1, k2 = self._keys
        await self._conn.execute(
            f"CREATE FUNCTION {self.name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" PERFORM pg_notify('{self.channel}', {payload});"
            f" PERFORM pg_advisory_xact_lock({k1}, {k2}); RETURN NEW; END $$"
        )
        await self._conn.execute(
            f"CREATE TRIGGER {self.name} AFTER UPDATE ON {table} FOR EACH ROW WHEN ({condition})"
            f" EXECUTE FUNCTION {self.name}()"
        )
        self._triggers.append(table)

    async def hold(self) -> None:
        await self._conn.execute("SELECT pg_advisory_lock($1, $2)", *self._keys)

    async def release(self) -> None:
        await self._conn.execute("SELECT pg_advisory_unlock($1, $2)", *self._keys)

    async def waiting(self) -> dict[int, str]:
        """Backends blocked on the lock (inside the trigger, so inside their transaction): ``{pid: statement}``."""
        rows = await self._conn.fetch(
            "SELECT l.pid, a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid = $1 AND l.objid = $2",
            *self._keys,
        )
        return {r["pid"]: r["query"] for r in rows}

    async def remove(self, conn: asyncpg.Connection | None = None) -> None:
        """Drop the trigger and its function (through ``conn`` when the server was restarted since)."""
        conn = conn or self._conn
        for table in self._triggers:
            await conn.execute(f"DROP TRIGGER IF EXISTS {self.name} ON {table}")
        await conn.execute(f"DROP FUNCTION IF EXISTS {self.name}()")
        self._triggers.clear()


# -- Redis -----------------------------------------------------------------------------------------


async def bulk_pending(redis: aioredis.Redis, part: Partition) -> dict[str, tuple[str, int]]:
    """The bulk lane's pending entries: ``{entry id: (consumer, times delivered)}``."""
    rows = await redis.xpending_range(part.bulk, part.group, "-", "+", 10_000)
    return {_text(r["message_id"]): (_text(r["consumer"]), int(r["times_delivered"])) for r in rows}


async def lanes(redis: aioredis.Redis, part: Partition) -> tuple[int, int, int]:
    """(XLEN interactive lane, XLEN bulk lane, entries pending on the bulk lane)."""
    pending = 0
    with contextlib.suppress(aioredis.ResponseError):
        pending = int((await redis.xpending(part.bulk, part.group))["pending"])
    return int(await redis.xlen(part.work)), int(await redis.xlen(part.bulk)), pending


def _epoch(value: Any) -> float | None:
    return None if value is None else float(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
