"""What watches every settled batch, besides Redis: the workers' metrics and the prediction log.

An observer is called with a partition and the outcomes the publisher is about to settle (every path
goes through ``Publisher.queue``: batches, bulk chunks, reclaimed entries). It must be cheap and must
not await: it counts, or appends to a buffer that its own task flushes. A batch whose settle fails is
settled (and observed) again: observers count at least once. One failing observer is logged and never
stops a settle or the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.settings import Settings
from inferq.store.prediction_log import PredictionLogStore
from inferq.streams.partition import Partition
from inferq.workers.metrics import worker_metrics
from inferq.workers.prediction_log import PredictionLogWriter

if TYPE_CHECKING:
    from inferq.workers.publisher import Outcome

log = structlog.get_logger(__name__)

Observe = Callable[[Partition, "Sequence[Outcome]"], None]


class Closable(Protocol):
    async def aclose(self) -> None: ...


class Observers:
    """The observers of one worker process, called in order; ``aclose`` flushes whatever they buffer."""

    def __init__(self, observers: Sequence[Observe] = (), closers: Sequence[Closable] = ()) -> None:
        self._observers = tuple(observers)
        self._closers = tuple(closers)

    def __call__(self, part: Partition, outcomes: Sequence[Outcome]) -> None:
        for observe in self._observers:
            try:
                observe(part, outcomes)
            except Exception as exc:  # an observer's bug must never stop a settle
                log.warning("observer.failed", observer=getattr(observe, "__qualname__", repr(observe)), error=str(exc))

    async def aclose(self) -> None:
        for closer in self._closers:
            try:
                await closer.aclose()
            except Exception as exc:
                log.warning("observer.close_failed", error=str(exc))


def observers_for(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Observers:
    """Every observer a worker process runs (metrics, the prediction log), from its settings."""
    observers: list[Observe] = []
    closers: list[Closable] = []
    if settings.worker_metrics_port:  # 0: nobody serves them (docs/metrics.md)
        observers.append(worker_metrics().observe)
    if settings.prediction_log.prediction_log_sample > 0:  # 0: no log at all, not even a buffer
        prediction_log = PredictionLogWriter.of(settings.prediction_log, PredictionLogStore(sessions))
        observers.append(prediction_log.observe)
        closers.append(prediction_log)
    return Observers(observers, closers)
