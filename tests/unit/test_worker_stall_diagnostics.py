"""The SIGUSR1 stack dump (inferq/workers/stacks.py): a stuck worker tells which await and which thread it is in."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from inferq.workers.stacks import DUMP_SIGNAL, await_chain, stack_dumps, task_stacks, thread_stacks


async def _parked_inner(gate: asyncio.Event) -> None:
    await gate.wait()


async def _parked_outer(gate: asyncio.Event) -> None:
    await _parked_inner(gate)


def _held_in_thread(release: threading.Event) -> None:
    release.wait()


@pytest.fixture
def held_thread() -> Iterator[threading.Thread]:
    release = threading.Event()
    thread = threading.Thread(target=_held_in_thread, args=(release,), name="held-probe")
    thread.start()
    yield thread
    release.set()
    thread.join(5)


def _task(stacks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [t for t in stacks if t["name"] == name]
    return found


async def test_a_task_shows_every_await_down_to_the_future_it_waits_for() -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(_parked_outer(gate), name="parked")
    await asyncio.sleep(0)
    try:
        found = _task(task_stacks(asyncio.get_running_loop()), "parked")
        functions = [frame.rsplit(" in ", 1)[1] for frame in found["stack"]]
        assert functions == ["_parked_outer", "_parked_inner", "Event.wait"]
        assert found["awaiting"].startswith("<Future pending")
        assert found["cancelling"] == 0
    finally:
        gate.set()
        await task


async def test_a_thread_hand_off_and_a_task_awaiting_another_are_named() -> None:
    release = threading.Event()
    handed_off = asyncio.create_task(asyncio.to_thread(release.wait), name="handed-off")
    waiter = asyncio.create_task(asyncio.wait_for(handed_off, timeout=30), name="waiter")
    await asyncio.sleep(0.05)
    try:
        stacks = task_stacks(asyncio.get_running_loop())
        assert "_chain_future" in _task(stacks, "handed-off")["awaiting"]  # waits for a thread
        assert _task(stacks, "handed-off")["stack"][0].endswith(" in to_thread")
        assert _task(stacks, "waiter")["stack"][0].endswith(" in wait_for")
    finally:
        release.set()
        await waiter


async def test_a_cancelled_task_that_has_not_finished_shows_its_pending_cancellation() -> None:
    gate = asyncio.Event()

    async def shielded() -> None:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            await gate.wait()  # still running after the cancel: what a swallowed cancellation looks like
            raise

    task = asyncio.create_task(shielded(), name="refusing")
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    try:
        assert _task(task_stacks(asyncio.get_running_loop()), "refusing")["cancelling"] == 1
    finally:
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_await_chain_of_things_that_are_not_coroutines_is_empty() -> None:
    assert await_chain(None) == []
    assert await_chain(42) == []
    assert await_chain(asyncio.Future) == []


def test_every_thread_is_listed_with_its_stack(held_thread: threading.Thread) -> None:
    threads = {t["name"]: t for t in thread_stacks()}
    assert threads["held-probe"]["ident"] == held_thread.ident
    functions = [frame.rsplit(" in ", 1)[1] for frame in threads["held-probe"]["stack"]]
    assert functions[-3:] == ["_held_in_thread", "Event.wait", "Condition.wait"]
    assert threads["MainThread"]["stack"][-1].endswith(" in thread_stacks")


async def test_sigusr1_logs_one_event_with_tasks_and_threads_and_faulthandler_writes_at_once(
    held_thread: threading.Thread, capfd: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.get_running_loop()
    before = signal.getsignal(DUMP_SIGNAL)
    gate = asyncio.Event()
    parked = asyncio.create_task(_parked_outer(gate), name="parked-for-signal")
    try:
        with structlog.testing.capture_logs() as logs, stack_dumps(loop):
            os.kill(os.getpid(), DUMP_SIGNAL)
            for _ in range(200):  # the handler runs at a later turn of the loop
                if logs:
                    break
                await asyncio.sleep(0.01)
    finally:
        gate.set()
        await parked
    assert [entry["event"] for entry in logs] == ["worker.stacks"]
    [event] = logs
    assert event["pid"] == os.getpid()
    assert any(frame.endswith(" in _parked_inner") for frame in _task(event["tasks"], "parked-for-signal")["stack"])
    assert "held-probe" in {t["name"] for t in event["threads"]}
    dumped = capfd.readouterr().err
    assert "_held_in_thread" in dumped  # faulthandler's dump: every thread, even if the loop were blocked
    assert signal.getsignal(DUMP_SIGNAL) == before  # the handler is removed on the way out


async def test_the_previous_handler_is_restored_even_when_the_body_raises() -> None:
    loop = asyncio.get_running_loop()
    inside: list[object] = []

    def failing_body() -> None:
        with stack_dumps(loop):
            inside.append(signal.getsignal(DUMP_SIGNAL))
            raise RuntimeError("boom")

    previous = signal.signal(DUMP_SIGNAL, signal.SIG_IGN)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            failing_body()
        assert signal.getsignal(DUMP_SIGNAL) == signal.SIG_IGN
    finally:
        signal.signal(DUMP_SIGNAL, previous)
    assert inside
    assert inside[0] not in (signal.SIG_IGN, signal.SIG_DFL)  # the loop's handler while inside
