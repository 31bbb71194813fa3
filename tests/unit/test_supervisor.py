"""The supervisor's exit status: a child killed by the SIGTERM it was sent is a clean stop, a crash is not."""

from __future__ import annotations

import asyncio
import sys

from inferq.settings import QueueSettings
from inferq.workers.supervisor import Supervisor

# A child with no SIGTERM handler yet (as a worker still importing): the signal's default action kills it.
NO_HANDLER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
FAILS_ON_STOP = [
    sys.executable,
    "-c",
    "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(3)); time.sleep(60)",
]


async def _stopped(command: list[str]) -> int:
    supervisor = Supervisor(command=command, processes=2, queue=QueueSettings())
    running = asyncio.create_task(supervisor.run())
    for _ in range(500):
        if len(supervisor.pids) == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # both children are running their code
    supervisor.stop()
    return await asyncio.wait_for(running, timeout=30)


async def test_a_child_killed_by_the_stop_signal_is_a_clean_stop() -> None:
    assert await _stopped(NO_HANDLER) == 0


async def test_a_child_that_fails_while_stopping_makes_the_supervisor_fail() -> None:
    assert await _stopped(FAILS_ON_STOP) == 1
