"""The prediction log's writer: an observer that buffers settled results, and a task that COPYs them to Postgres.

``observe`` runs in the settle path, so it only samples, makes a small record and appends it to a
bounded buffer (full: the record is dropped and counted). A task of its own writes the buffer every
``prediction_log_flush_s``, or sooner once ``FLUSH_ROWS`` wait (or half the buffer), in COPYs of at
most ``FLUSH_ROWS``. When Postgres fails, that batch is dropped and counted, the next attempt backs
off, and the buffer fills up to its bound meanwhile: the worker never waits for the log, and the log
never stops the worker. Every record is written once or logged as dropped (``prediction_log.dropped``
with ``rows`` and a ``reason``). Shadow traffic is kept whatever the sampling: a mirror and its primary are
logged as a pair, to be compared (``log_buffer.py``; ``GET /v1/models/{model}/compare``).

Job chunks are not logged: their rows are already in Postgres (the job's results and counters), the
observer sees a chunk only after its outcome went there, and one chunk's run time is shared by hundreds
of rows, which would distort the percentiles of interactive requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import structlog

from inferq.settings import PredictionLogSettings
from inferq.store.prediction_log import LogRecord
from inferq.streams.partition import Partition
from inferq.workers.backoff import Backoff
from inferq.workers.log_buffer import LogBuffer, Sampler

if TYPE_CHECKING:
    from inferq.workers.publisher import Outcome

log = structlog.get_logger(__name__)

# Rows per COPY, and a write starts early once this many wait. NOTE: converting and encoding a batch holds
# the event loop (measured: ~0.8 ms for 1000 rows, ~4 ms for 5000), and every partition waits meanwhile.
FLUSH_ROWS = 1_000
CLOSE_TIMEOUT_S = 10.0  # shutdown: the last write may take this long, then its rows are dropped


class LogSink(Protocol):
    """Where the records go (``store.prediction_log.PredictionLogStore``): all of a batch, or an error."""

    async def insert(self, records: Sequence[LogRecord]) -> None: ...


class PredictionLogWriter:
    """The observer (``observe``) and its flushing task, started on the first observed batch."""

    def __init__(
        self, store: LogSink, buffer: LogBuffer, *, flush_s: float, close_timeout_s: float = CLOSE_TIMEOUT_S
    ) -> None:
        self._store = store
        self.buffer = buffer
        self._flush_s = flush_s
        self._close_timeout_s = close_timeout_s
        self._early_rows = min(FLUSH_ROWS, max(1, buffer.capacity // 2))  # a small buffer is written half full
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing = 0  # rows of the COPY under way
        self._reported = 0  # buffer-full drops already logged
        self.written = 0
        self.failed = 0  # rows of batches Postgres did not take

    @classmethod
    def of(cls, settings: PredictionLogSettings, store: LogSink) -> PredictionLogWriter:
        sampler = Sampler(settings.prediction_log_sample)
        buffer = LogBuffer(capacity=settings.prediction_log_buffer, sampler=sampler)
        return cls(store, buffer, flush_s=settings.prediction_log_flush_s)

    def observe(self, part: Partition, outcomes: Sequence[Outcome]) -> None:
        """The observer: buffer, never wait. (Called in the event loop, by the settle path.)"""
        if self._closing.is_set():
            return
        self.buffer.add(outcomes)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="prediction-log")
        if len(self.buffer) >= self._early_rows:
            self._wake.set()

    async def aclose(self) -> None:
        """Write what is buffered (for at most ``close_timeout_s``) and stop."""
        self._closing.set()
        self._wake.set()
        if self._task is None:
            return
        # NOTE: the task stops on ``_closing``; a cancel is the last resort and is not waited for long (on Python
        # 3.11 asyncio.wait_for can swallow a cancel that lands as what it awaits completes: no hung shutdown).
        done, _ = await asyncio.wait({self._task}, timeout=self._close_timeout_s)
        if not done:  # Postgres hung: give up the COPY under way
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)
            self._report_full()
            self._abandon(self._writing)

    async def _run(self) -> None:
        backoff = Backoff(initial_s=self._flush_s, max_s=max(30.0, self._flush_s))
        while True:
            closing = self._closing.is_set()
            if not closing:
                await _wait(self._wake, self._flush_s)
                self._wake.clear()
            self._report_full()
            ok = await self._flush()
            if closing:
                self._abandon()  # what a failed last write left behind
                return
            if ok:
                backoff.reset()
            else:  # Postgres is away: let the buffer take the next rows rather than fail them every second
                await _wait(self._closing, backoff.next())

    async def _flush(self) -> bool:
        """Write the buffer, ``FLUSH_ROWS`` at a time; False after a batch failed (it is dropped)."""
        while len(self.buffer):
            batch = self.buffer.take(FLUSH_ROWS)
            self._writing = len(batch)  # NOTE: kept if the COPY is cancelled: ``aclose`` reports those rows
            try:
                await self._store.insert(batch)
            except Exception as exc:  # down, timed out, or refused: drop this batch, keep serving
                self._writing = 0
                self.failed += len(batch)
                log.warning("prediction_log.dropped", rows=len(batch), reason="write failed", error=str(exc))
                return False
            self._writing = 0
            self.written += len(batch)
        return True

    def _report_full(self) -> None:
        """Log the records the full buffer turned away since the last report."""
        if self.buffer.dropped > self._reported:
            log.warning("prediction_log.dropped", rows=self.buffer.dropped - self._reported, reason="buffer full")
            self._reported = self.buffer.dropped

    def _abandon(self, writing: int = 0) -> None:
        """Closing: log what will never be written (still buffered, and the cancelled COPY's rows)."""
        rows = len(self.buffer.take()) + writing
        if rows:
            log.warning("prediction_log.dropped", rows=rows, reason="closed before written")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` pass (``asyncio.timeout``: a cancel is never swallowed)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
