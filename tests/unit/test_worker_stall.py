"""A run's heartbeats end with the run, even when a heartbeat swallows its cancellation (the worker stall).

On Python 3.11, redis-py sends every command through ``asyncio.wait_for(…, socket_timeout)``, and 3.11's
``wait_for`` drops a cancellation that lands just as the send completes: cancelling a heartbeat in flight
sometimes does nothing. The heartbeat loop then beat on forever, the run's ``async with`` waited for it
forever, and the entries, heartbeated all along, were never reclaimed either (seen as fault tests timing
out). Here a fake heartbeat swallows every cancellation, so the interleaving happens every time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import msgspec
import numpy as np
import pytest

import inferq.workers.executor as executor_module
from inferq.contracts.messages import InferRequest, InferResult
from inferq.contracts.names import Names
from inferq.inputs import encode_tensors
from inferq.settings import Settings
from inferq.streams.consumer import Entry
from inferq.streams.partition import Partition
from inferq.workers.batch import Work, finish
from inferq.workers.clock import RedisClock
from inferq.workers.executor import Executor

# A guard that turns a hang into a failure; the runs here take milliseconds (this is no timing assertion).
HANG_GUARD_S = 10.0
ENTRY = Entry(lane="interactive", id="1-0", message=b"")


class SwallowingHeartbeat:
    """``streams.consumer.heartbeat`` as it behaves when cancelled mid-send on Python 3.11: it returns normally.

    Every call stays in flight until cancelled, so the run always ends while a heartbeat is being sent.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.swallowed = 0
        self.in_flight = asyncio.Event()
        self.closed = False
        self._parked = asyncio.Event()

    async def __call__(self, redis: object, part: Partition, *, consumer: str, entries: list[Entry]) -> None:
        assert entries == [ENTRY]
        if self.closed:
            return
        self.calls += 1
        self.in_flight.set()
        try:
            await self._parked.wait()  # only a cancellation (or ``close``) ends it
        except asyncio.CancelledError:
            if self.closed:
                raise
            self.swallowed += 1  # and return as if the command had been sent

    def close(self) -> None:
        """Stop swallowing: heartbeats a failing test left behind can then be cancelled."""
        self.closed = True
        self._parked.set()


class Sources:
    """A ``ModelSource`` whose model is loaded already (the run is what this test is about)."""

    def loaded(self, version: object, *, engine: object) -> bool:
        return True

    async def runner(self, version: object, *, engine: object) -> object:
        return object()


def held_run(release: threading.Event) -> Callable[..., list[InferResult]]:
    """``batch.execute`` that blocks its thread until ``release``: the test decides when the run ends."""

    def execute(works: Sequence[Work], runner: object, **_: Any) -> list[InferResult]:
        assert release.wait(HANG_GUARD_S)
        return [finish(work, "succeeded") for work in works]

    return execute


def work() -> Work:
    request = InferRequest(
        id="r1", tenant="t", model="m", version=1, inputs=encode_tensors({"x": np.ones((1, 2), np.float32)}),
        rows=1, ttl_ms=60_000,
    )  # fmt: skip
    return Work(request=request, enqueued_ms=0, dequeued_ms=0.0)


@pytest.fixture
async def beats(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SwallowingHeartbeat]:
    fake = SwallowingHeartbeat()
    monkeypatch.setattr(executor_module, "heartbeat", fake)
    yield fake
    # A failing test leaves a heartbeat loop behind that would hang the (shared) event loop's shutdown.
    fake.close()
    leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith("heartbeat:")]
    for task in leftover:
        task.cancel()
    await asyncio.gather(*leftover, return_exceptions=True)


@pytest.fixture
def release(monkeypatch: pytest.MonkeyPatch) -> Any:
    event = threading.Event()
    monkeypatch.setattr(executor_module, "execute", held_run(event))
    yield event
    event.set()  # never leave a thread of the shared default executor blocked


def threaded_executor() -> Executor:
    settings = Settings()
    # every batch runs in a thread with heartbeats; the first beat right away
    queue = msgspec.structs.replace(settings.queue, thread_crossover_rows=1, heartbeat_ms=1)
    return Executor(
        redis=cast(Any, None), part=Partition.of(Names("t"), model="m", version=1), version=cast(Any, None),
        settings=msgspec.structs.replace(settings, queue=queue), consumer="c", models=cast(Any, Sources()),
        clock=RedisClock(), ledger=None,
    )  # fmt: skip


async def test_a_run_ends_when_its_heartbeat_swallows_the_cancellation(
    beats: SwallowingHeartbeat, release: threading.Event
) -> None:
    run = asyncio.create_task(threaded_executor().run([work()], keep_alive=[ENTRY]))
    await asyncio.wait_for(beats.in_flight.wait(), HANG_GUARD_S)
    release.set()  # the run ends while a heartbeat is in flight

    done, _ = await asyncio.wait([run], timeout=HANG_GUARD_S)  # (wait_for would cancel it: the hang again)

    assert done == {run}, "the run never ended: its heartbeat loop went on after the cancellation"
    assert [r.status for r in run.result()] == ["succeeded"]
    assert (beats.calls, beats.swallowed) == (1, 1)  # cancelled in flight, swallowed, and no beat after the run


async def test_a_cancelled_run_still_ends_cancelled_when_its_heartbeat_swallows_the_cancellation(
    beats: SwallowingHeartbeat, release: threading.Event
) -> None:
    run = asyncio.create_task(threaded_executor().run([work()], keep_alive=[ENTRY]))
    await asyncio.wait_for(beats.in_flight.wait(), HANG_GUARD_S)
    run.cancel()  # a stop that timed out, while the batch runs in its thread

    done, _ = await asyncio.wait([run], timeout=HANG_GUARD_S)

    assert done == {run}, "the cancelled run never ended: its heartbeat loop went on after the cancellation"
    assert run.cancelled()
    assert (beats.calls, beats.swallowed) == (1, 1)


async def test_heartbeats_go_on_while_the_run_lasts(release: threading.Event, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fix must not stop a long run's heartbeats early: a beat that ended on its own is followed by the next."""
    ended = 0

    async def returning(redis: object, part: Partition, *, consumer: str, entries: list[Entry]) -> None:
        nonlocal ended
        ended += 1
        if ended == 3:
            release.set()  # the run ends after the third heartbeat

    monkeypatch.setattr(executor_module, "heartbeat", returning)
    run = asyncio.create_task(threaded_executor().run([work()], keep_alive=[ENTRY]))
    done, _ = await asyncio.wait([run], timeout=HANG_GUARD_S)
    assert done == {run}
    assert [r.status for r in run.result()] == ["succeeded"]
    assert ended >= 3
