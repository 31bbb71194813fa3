"""``inferq tasks`` as a real process: it delivers a scheduled webhook, its reconciler finds a lost one, it stops."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from inferq.contracts.jobs import NewChunk, NewJob, RowOutcome, WebhookSpec
from inferq.contracts.predictions import Prediction
from inferq.settings import Settings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.deliveries import DeliveryStore
from inferq.store.jobs import JobStore
from inferq.store.tables import TenantRow
from inferq.streams.tasks import TaskQueue
from inferq.webhooks.signatures import new_secret


class Receiver:
    """An HTTP/1.1 endpoint on 127.0.0.1 that answers 204 and keeps ``(headers, body)`` of each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not reader.at_eof():
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[1:]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((headers, body))
                self.arrived.set()
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    endpoint = Receiver()
    server = await asyncio.start_server(endpoint.serve, "127.0.0.1", 0)
    endpoint.port = server.sockets[0].getsockname()[1]
    yield endpoint
    server.close()


@pytest.fixture
async def sessionmaker(fresh_database: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(fresh_database)
    yield create_sessionmaker(engine)
    await engine.dispose()


def cli_env(settings: Settings, *, database: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(
        INFERQ_DATABASE_URL=database,
        INFERQ_REDIS_URL=settings.services.redis_url or "",
        INFERQ_KEY_PREFIX=settings.services.key_prefix,
        **extra,
    )
    return env


async def inferq(*args: str, env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """Run ``inferq ARGS``: ``(exit status, stdout, stderr)``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inferq", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def make_tenant(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    tenant = f"t-{secrets.token_hex(6)}"
    async with sessionmaker.begin() as session:
        await session.execute(insert(TenantRow).values(id=tenant, name=tenant))
    return tenant


async def finished_job(sessionmaker: async_sessionmaker[AsyncSession], *, tenant: str, url: str) -> tuple[str, str]:
    """A succeeded one-row job with a webhook: ``(job_id, delivery_id)``; its delivery is pending, not queued."""
    store = JobStore(sessionmaker)

    async def chunks() -> AsyncIterator[NewChunk]:
        yield NewChunk(seq=0, rows=1, indexes=(0,), custom_ids=("row-0",), inputs=b"opaque")

    job = NewJob(tenant=tenant, model="iris", version=1, completion_window_s=3600.0, webhook=WebhookSpec(url=url))
    record, _ = await store.create(job, chunks())
    events = await store.complete_chunk(record.id, 0, outcomes=[RowOutcome(prediction=Prediction(label=2))])
    (delivery_id,) = [e.delivery_id for e in events if e.delivery_id]
    return record.id, delivery_id


async def drain(queue: TaskQueue) -> None:
    """Remove what is left on the run's task queue, with arq's keys for it (outside our prefix)."""
    for raw in await queue.arq.zrange(queue.name, 0, -1):
        job_id = raw.decode()
        await queue.arq.delete(*(f"arq:{kind}:{job_id}" for kind in ("job", "result", "retry", "in-progress")))
    await queue.arq.delete(queue.name)


async def test_inferq_tasks_delivers_scheduled_and_lost_webhooks_then_stops_on_sigterm(
    settings: Settings,
    fresh_database: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_client: aioredis.Redis,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    env = cli_env(
        settings,
        database=fresh_database,
        INFERQ_WEBHOOK_ALLOW_PRIVATE="true",
        INFERQ_RECONCILE_INTERVAL_S="0.2",
        INFERQ_WEBHOOK_TIMEOUT_S="2",
        INFERQ_WEBHOOK_RETRY_SCALE="0.001",
    )
    tenant = await make_tenant(sessionmaker)
    status, out, _ = await inferq("webhooks", "secret", "--tenant", tenant, env=env)
    assert status == 0
    secret = json.loads(out)
    url = f"http://127.0.0.1:{receiver.port}/hook"
    scheduled_job, scheduled = await finished_job(sessionmaker, tenant=tenant, url=url)
    lost_job, lost = await finished_job(sessionmaker, tenant=tenant, url=url)
    queue = TaskQueue(redis_client, prefix=settings.services.key_prefix)
    assert await queue.deliver(scheduled, attempt=1)  # as the API does; the other is left to the reconciler

    log = tmp_path / "tasks.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inferq", "tasks", env=env, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        async with asyncio.timeout(30):
            while True:
                receiver.arrived.clear()
                if {json.loads(body)["data"]["id"] for _, body in receiver.requests} == {scheduled_job, lost_job}:
                    break
                await receiver.arrived.wait()
        assert await redis_client.exists(f"{settings.services.key_prefix}:tasks:health-check") == 1
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await drain(queue)
    stderr = log.read_text()

    assert len(receiver.requests) == 2, stderr  # its own database holds nothing else to deliver
    for headers, body in receiver.requests:
        assert Webhook(secret["secret"]).verify(body, headers)["type"] == "job.succeeded"
    deliveries = DeliveryStore(sessionmaker, new_secret=new_secret)
    for job_id in (scheduled_job, lost_job):
        (view,) = await deliveries.for_job(tenant, job_id)
        assert (view.status, view.attempts, view.last_status) == ("succeeded", 1, 204)
    assert await redis_client.exists(f"{settings.services.key_prefix}:tasks:health-check") == 0
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    attempted = [e["delivery_id"] for e in events if e["event"] == "delivery.attempted"]
    assert sorted(attempted) == sorted([scheduled, lost])
    # the reconciler scheduled the lost delivery, and only it (arq already had the other)
    assert sum(e["count"] for e in events if e["event"] == "reconciler.scheduled") == 1


async def test_webhooks_secret_prints_rotates_and_refuses_an_unknown_tenant(
    settings: Settings, fresh_database: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    env = cli_env(settings, database=fresh_database)
    tenant = await make_tenant(sessionmaker)

    made = await inferq("webhooks", "secret", "--tenant", tenant, env=env)
    again = await inferq("webhooks", "secret", "--tenant", tenant, env=env)
    rotated = await inferq("webhooks", "secret", "--tenant", tenant, "--rotate", env=env)
    unknown = await inferq("webhooks", "secret", "--tenant", f"{tenant}-nope", env=env)

    first = json.loads(made[1])
    assert (made[0], again[0], rotated[0]) == (0, 0, 0)
    assert first["secret"].startswith("whsec_")
    assert first["previous"] is None
    assert json.loads(again[1]) == first  # shown again, not made again
    second = json.loads(rotated[1])
    assert second["secret"] != first["secret"]
    assert second["previous"] == first["secret"]
    assert await DeliveryStore(sessionmaker, new_secret=new_secret).active_secrets(tenant) == (
        second["secret"], first["secret"],
    )  # fmt: skip
    assert (unknown[0], unknown[1]) == (2, b"")
    error = json.loads(unknown[2].decode().strip().splitlines()[-1])["error"]
    assert (error["code"], error["details"]) == ("invalid_input", {"field": "tenant"})
