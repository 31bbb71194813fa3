"""Batch jobs under worker crashes: kill -9 mid-job, and a crash between a chunk's commit and its XACK.

Either way the job ends once, every row has exactly one result, each state change has one outbox
event, and each event reaches the webhook receiver under one ``webhook-id`` however many attempts.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from .harness import Proc, Stack, eventually, unique
from .test_jobs_kit import (
    WEBHOOK_ENV,
    WORKER_ENV,
    JobRows,
    Receiver,
    TransactionHold,
    assert_each_row_once,
    assert_predictions_exact,
    bulk_pending,
    by_event,
    connect_args,
    deep_model,
    fail_first,
    job,
    lanes,
    results_jsonl,
    runs_by_chunk,
    secret,
    submit,
    wait_terminal,
)

CHUNK_ROWS = 200
API_ENV = {"INFERQ_CHUNK_ROWS": CHUNK_ROWS, "INFERQ_WEBHOOK_ALLOW_PRIVATE": "true"}
HOST = socket.gethostname()


async def assert_delivered_once_each(receiver: Receiver, rows: JobRows, job_id: str) -> dict[str, list[int]]:
    """One ``webhook-id`` per outbox event (started, succeeded), each tried twice (500, then 204), signed."""
    hooks = receiver.of(job_id)
    events = await rows.events(job_id)
    grouped = by_event(hooks)
    assert sorted(grouped) == sorted(event_id for _, event_id in events)
    assert {ids[0].type for ids in grouped.values()} == {"job.started", "job.succeeded"}
    assert all(len({h.type for h in ids}) == 1 for ids in grouped.values())
    answers = {ids[0].type: [h.answered for h in ids] for ids in grouped.values()}
    assert answers == {"job.started": [500, 204], "job.succeeded": [500, 204]}
    assert all(h.verified for h in hooks), "a webhook's signature did not verify"
    deliveries = await rows.deliveries(job_id)
    assert [(d.type, d.status, d.attempts) for d in deliveries] == [
        ("job.started", "succeeded", 2),
        ("job.succeeded", "succeeded", 2),
    ]
    return answers


async def test_worker_killed_mid_job_second_worker_finishes_it_exactly_once(stack: Stack) -> None:
    """Two workers share a 3,000-row job; one is killed (-9, its whole process group) while it runs a chunk.

    The survivor reclaims the dead consumer's pending chunk after min-idle and runs it again; the store keeps
    the first result of every chunk only, so the job still ends once with one result per row.
    """
    rows_total = 3000
    model = deep_model(depth=60)  # ~0.4 s per 200-row chunk
    version = await stack.register(model, name=unique("deep"))
    part = stack.partition(version)
    api = stack.serve(**API_ENV)
    workers = [stack.worker([version], **WORKER_ENV) for _ in range(2)]
    tasks = stack.tasks(**WEBHOOK_ENV)
    await stack.api_ready(api)
    for worker in workers:
        await stack.worker_ready(worker, version)
    await stack.tasks_ready(tasks)
    redis = stack.client()

    async with Receiver(fail_first) as receiver, api.client() as http, JobRows.opened(stack.database_url) as rows:
        receiver.secret = await secret(api)
        submitted = await submit(http, version.key, rows_total, webhook=receiver.url)
        job_id = submitted["id"]
        chunks_total = -(-rows_total // CHUNK_ROWS)

        # Mid-job: some chunks done, and a worker running one whose result is not stored yet. The worker is
        # frozen (SIGSTOP) before that is checked, so the chunk cannot be stored between the check and the kill.
        victim: dict[str, Any] = {}

        async def frozen_mid_chunk() -> bool:
            done = {c.seq for c in await rows.chunks(job_id) if c.status == "done"}
            running = [(s, r[-1]["pid"]) for s, r in runs_by_chunk(stack, job_id).items() if s not in done]
            if len(done) < 2 or not running:
                return False
            seq, pid = running[0]
            owner = next(w for w in workers if pid in w.children())
            owner.signal_group(signal.SIGSTOP)
            await asyncio.sleep(0.05)  # a COMMIT already on its way to Postgres lands now
            if next(c for c in await rows.chunks(job_id) if c.seq == seq).status == "queued":
                victim.update(seq=seq, pid=pid, worker=owner)
                return True
            owner.signal_group(signal.SIGCONT)  # it had just finished that chunk: try again
            return False

        await eventually(frozen_mid_chunk, 60, "a worker to be running a chunk mid-job")
        killed: Proc = victim["worker"]
        survivor = next(w for w in workers if w is not killed)
        killed.signal_group(signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.to_thread(killed.popen.wait, 10)

        # What the dead consumer held: read-but-unacked entries, which only a reclaim can finish.
        dead_consumer = f"{HOST}:{victim['pid']}"
        entry_to_seq = {c.entry_id: c.seq for c in await rows.chunks(job_id)}
        held = {
            entry_to_seq[e] for e, (owner, _) in (await bulk_pending(redis, part)).items() if owner == dead_consumer
        }
        done_at_kill = sum(c.status == "done" for c in await rows.chunks(job_id))
        assert victim["seq"] in held, f"chunk {victim['seq']} was not pending for {dead_consumer}: {held}"
        assert 2 <= done_at_kill < chunks_total, "the kill did not land mid-job"

        rerun_at: dict[int, float] = {}

        async def finished() -> bool:
            for seq in held:
                if seq not in rerun_at and any(line["delivery"] == 2 for line in runs_by_chunk(stack, job_id)[seq]):
                    rerun_at[seq] = time.monotonic() - killed_at
            return (await job(http, job_id))["status"] not in ("queued", "running")

        await eventually(finished, 60, "the job to end")
        recovery_s = time.monotonic() - killed_at
        final, _ = await wait_terminal(http, job_id, 1)
        lines = await results_jsonl(http, job_id)

        async def hooks_done() -> bool:
            return sum(h.answered == 204 for h in receiver.of(job_id)) == 2

        await eventually(hooks_done, 20, "both webhook events to be delivered")
        await asyncio.sleep(1.0)  # five more reconciler passes: a second delivery would show up now
        answers = await assert_delivered_once_each(receiver, rows, job_id)
        events = [t for t, _ in await rows.events(job_id)]
        chunk_rows = await rows.chunks(job_id)

    assert final["status"] == "succeeded"
    assert final["counts"] == {"total": rows_total, "succeeded": rows_total, "failed": 0}
    assert_each_row_once(lines, rows_total)
    assert_predictions_exact(lines, model=model)
    assert events == ["job.started", "job.succeeded"]
    assert [(c.seq, c.status) for c in chunk_rows] == [(s, "done") for s in range(chunks_total)]

    runs = runs_by_chunk(stack, job_id)
    assert sorted(runs) == list(range(chunks_total))
    rerun = {seq for seq, attempts in runs.items() if len(attempts) > 1}
    started_by_dead = {seq for seq in held if any(line["pid"] == victim["pid"] for line in runs[seq])}
    assert rerun == started_by_dead, f"re-runs {sorted(rerun)}, started by the killed worker {started_by_dead}"
    for seq in held:  # reclaimed: a second delivery, in the survivor
        assert [line["delivery"] for line in runs[seq]][-1] == 2
        assert runs[seq][-1]["pid"] in survivor.children()
    assert all(len(runs[seq]) == 1 for seq in set(runs) - rerun)
    assert await lanes(redis, part) == (0, 0, 0)  # every entry acked and deleted, nothing pending
    assert survivor.alive()
    assert tasks.alive()
    print(
        f"\n[jobs: kill -9 a worker mid-job] {rows_total} rows in {chunks_total} chunks, {done_at_kill} done at "
        f"the kill; the killed worker held chunk(s) {sorted(held)}; reclaimed and re-run "
        f"{', '.join(f'{s}: {t:.2f} s' for s, t in sorted(rerun_at.items()))} after the kill (min-idle 1.5 s); "
        f"recovery kill → job succeeded {recovery_s:.2f} s; webhook answers per event {answers}"
    )


async def test_crash_between_chunk_commit_and_xack_changes_nothing(stack: Stack) -> None:
    """A worker dies after its chunk's outcomes are committed to Postgres and before its XACK.

    How the window is hit, deterministically and with no hook in inferq: a trigger on ``job_chunks`` makes
    the worker's chunk transaction (1) queue a NOTIFY, delivered only at commit, then (2) wait for an advisory
    lock the test holds. Once the worker is seen blocked there, the test pauses writes on its own Redis
    (``CLIENT PAUSE … WRITE``: XACK is a write) and only then releases the lock. So when the NOTIFY arrives
    the chunk is committed and its XACK cannot have run; the test kills the worker (-9) during the pause and
    checks the window directly: the chunk is ``done`` in Postgres and its entry still pending in XPENDING for
    the dead consumer, delivered once. The supervisor restarts the worker; the reclaimer runs the chunk again.
    """
    rows_total = 1000
    model = deep_model(depth=20)
    version = await stack.register(model, name=unique("deep"))
    part = stack.partition(version)
    api = stack.serve(**API_ENV)
    tasks = stack.tasks(**WEBHOOK_ENV)
    await stack.api_ready(api)
    await stack.tasks_ready(tasks)
    redis = stack.client()
    name = f"iqf_hold_{secrets.token_hex(4)}"
    control = await asyncpg.connect(**connect_args(stack.database_url))
    listener = await asyncpg.connect(**connect_args(stack.database_url))
    hold = TransactionHold(control, name=name)
    committed: asyncio.Queue[str] = asyncio.Queue()
    worker: Proc | None = None
    try:
        async with Receiver(fail_first) as receiver, api.client() as http, JobRows.opened(stack.database_url) as rows:
            receiver.secret = await secret(api)
            submitted = await submit(http, version.key, rows_total, webhook=receiver.url)  # no worker yet
            job_id = submitted["id"]
            chunks_total = -(-rows_total // CHUNK_ROWS)
            await hold.install(
                table="job_chunks",
                condition=f"NEW.job_id = '{job_id}' AND OLD.status = 'queued' AND NEW.status = 'done'",
                payload="NEW.seq::text",
            )
            await listener.add_listener(hold.channel, lambda *args: committed.put_nowait(args[3]))
            await hold.hold()
            worker = stack.worker([version], **WORKER_ENV, INFERQ_SOCKET_TIMEOUT_S=10)

            async def blocked() -> bool:
                return bool(await hold.waiting())

            await eventually(blocked, 60, "the worker's chunk transaction to wait on the lock")
            await redis.client_pause(30_000, all=False)
            paused_at = time.monotonic()
            try:
                await hold.release()
                seq = int(await asyncio.wait_for(committed.get(), timeout=10))  # committed: the XACK comes next
                [child] = worker.children()
                os.kill(child, signal.SIGKILL)
                killed_at = time.monotonic()
                pending = await bulk_pending(redis, part)  # a read: answered during the pause
                chunks = {c.seq: c for c in await rows.chunks(job_id)}
            finally:
                await redis.client_unpause()
            paused_s = time.monotonic() - paused_at

            # The window: results committed, entry not acknowledged, when the worker died. (The worker may also
            # hold the next chunk, read while this one was being stored: pending too, but not done.)
            assert chunks[seq].status == "done"
            assert pending[chunks[seq].entry_id or ""] == (f"{HOST}:{child}", 1)
            by_entry = {c.entry_id: c for c in chunks.values()}
            others = [by_entry[e] for e in pending if e != chunks[seq].entry_id]
            assert len(others) <= 1
            assert all(c.status == "queued" for c in others)
            await hold.remove()

            final, took = await wait_terminal(http, job_id, 60)
            recovery_s = time.monotonic() - killed_at
            lines = await results_jsonl(http, job_id)

            async def hooks_done() -> bool:
                return sum(h.answered == 204 for h in receiver.of(job_id)) == 2

            await eventually(hooks_done, 20, "both webhook events to be delivered")
            await asyncio.sleep(1.0)
            answers = await assert_delivered_once_each(receiver, rows, job_id)
            events = [t for t, _ in await rows.events(job_id)]
            chunk_rows = await rows.chunks(job_id)
    finally:
        await hold.remove()
        await listener.close()
        await control.close()

    assert final["status"] == "succeeded"
    assert final["counts"] == {"total": rows_total, "succeeded": rows_total, "failed": 0}
    assert_each_row_once(lines, rows_total)
    assert_predictions_exact(lines, model=model)
    assert events == ["job.started", "job.succeeded"]  # job.started was written by the killed chunk's commit
    assert [(c.seq, c.status) for c in chunk_rows] == [(s, "done") for s in range(chunks_total)]
    runs = runs_by_chunk(stack, job_id)
    assert sorted(runs) == list(range(chunks_total))
    twice = {s for s, r in runs.items() if len(r) == 2}
    # the committed chunk ran again; so did, at most, the one chunk the worker held beside it (read while
    # the committed one was being stored); every other chunk ran once
    assert seq in twice
    assert len(twice - {seq}) <= 1
    assert {s: len(r) for s, r in runs.items() if s not in twice} == {
        s: 1 for s in range(chunks_total) if s not in twice
    }
    first, second = runs[seq]
    assert (first["pid"], first["delivery"]) == (child, 1)
    assert second["pid"] != child
    assert second["delivery"] == 2
    assert await lanes(redis, part) == (0, 0, 0)
    assert worker is not None
    exits = [e for e in worker.events() if e.get("event") == "worker.exited"]
    assert [e["exit_code"] for e in exits] == [-signal.SIGKILL]
    print(
        f"\n[jobs: crash after commit, before XACK] chunk {seq} committed, its entry pending for the dead consumer "
        f"(writes paused {paused_s:.2f} s); restarted worker reclaimed and re-ran it, its second result ignored; "
        f"recovery kill → job succeeded {recovery_s:.2f} s (wait {took:.2f} s after the unpause); webhook answers "
        f"per event {answers}"
    )
