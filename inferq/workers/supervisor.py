"""``Supervisor``: keeps N worker processes running, restarts crashed ones with backoff, drains on stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Mapping, Sequence

import structlog

from inferq.settings import QueueSettings
from inferq.workers.backoff import Backoff, sleep_unless

log = structlog.get_logger(__name__)

# A child that ran this long before exiting was healthy: its next restart starts the backoff over.
STABLE_S = 30.0


class Supervisor:
    """Runs ``processes`` copies of ``command`` (a worker process each).

    A child that exits while the supervisor is not stopping (a crash, an OOM kill, a poison message
    that takes the process down) is restarted after ``restart_backoff_ms``, doubling up to
    ``restart_backoff_max_ms``. ``stop()`` sends SIGTERM to every child and waits for them to drain;
    children still running after ``shutdown_grace_s`` are killed.
    """

    def __init__(
        self, *, command: Sequence[str], processes: int, queue: QueueSettings, env: Mapping[str, str] | None = None
    ) -> None:
        self._command = list(command)
        self._processes = processes
        self._queue = queue
        self._env = dict(env) if env is not None else None
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self.restarts = 0

    @property
    def pids(self) -> list[int]:
        """Process ids of the children running now."""
        return [p.pid for p in self._children.values() if p.returncode is None]

    def stop(self) -> None:
        """Forward SIGTERM to every child; ``run`` returns once they have exited (safe in a signal handler)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for child in self._children.values():
            _signal(child, signal.SIGTERM)
        asyncio.get_running_loop().call_later(self._queue.shutdown_grace_s, self._kill_all)

    async def run(self) -> int:
        """Until stopped; 0 when every child drained and exited cleanly, else 1."""
        codes = await asyncio.gather(*(self._keep(slot) for slot in range(self._processes)))
        return 0 if all(code == 0 for code in codes) else 1

    async def _keep(self, slot: int) -> int:
        queue = self._queue
        backoff = Backoff(initial_s=queue.restart_backoff_ms / 1000, max_s=queue.restart_backoff_max_ms / 1000)
        while True:
            child = await asyncio.create_subprocess_exec(*self._command, env=self._env)
            self._children[slot] = child
            if self._stopping.is_set():  # stop() ran while this child was being spawned
                _signal(child, signal.SIGTERM)
            log.info("worker.started", slot=slot, pid=child.pid)
            started = time.monotonic()
            code = await child.wait()
            if self._stopping.is_set():
                log.info("worker.stopped", slot=slot, pid=child.pid, exit_code=code)
                # NOTE: killed by the SIGTERM we sent: it came before the child's handler existed, i.e. before
                # its pool ran (the handler is installed first), so it had read nothing: a clean stop too.
                return 0 if code == -signal.SIGTERM else code
            if time.monotonic() - started >= STABLE_S:
                backoff.reset()
            delay = backoff.next()
            log.warning("worker.exited", slot=slot, pid=child.pid, exit_code=code, restart_in_s=round(delay, 3))
            if await sleep_unless(self._stopping, delay):
                return 0
            self.restarts += 1

    def _kill_all(self) -> None:
        for child in self._children.values():
            if child.returncode is None:
                log.warning("worker.killed", pid=child.pid, grace_s=self._queue.shutdown_grace_s)
                _signal(child, signal.SIGKILL)


def _signal(child: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if child.returncode is None:
            child.send_signal(sig)
