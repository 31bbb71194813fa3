"""What ``inferq worker``'s supervisor serves on ``/metrics``: its children's metrics summed, and its own.

The children write to a multiprocess directory the supervisor made (or the configured
``PROMETHEUS_MULTIPROC_DIR``) and passed in their environment; each scrape sums every file, so a
restarted child's counts stay in the totals. The supervisor's own two values (children running,
restarts) are read from it at scrape time and rendered as metric families: it writes no files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from inferq.observability import multiprocess
from inferq.observability.exposition import served
from inferq.settings import Settings


class Supervised(Protocol):
    """What the metrics read of a ``Supervisor``."""

    @property
    def pids(self) -> list[int]: ...

    restarts: int


class SupervisorGauges(Collector):
    """The supervisor's own values, as metric families built at collection."""

    def __init__(self, supervisor: Supervised) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            "inferq_worker_processes", "Worker processes running under this supervisor.", len(self._supervisor.pids)
        )
        yield CounterMetricFamily(
            "inferq_worker_restarts",
            "Worker processes restarted by this supervisor since it started (crashed, killed, OOM).",
            self._supervisor.restarts,
        )


class SupervisorMetrics:
    """The exposition text of one supervisor and its children's ``directory``."""

    def __init__(self, supervisor: Supervised, directory: Path) -> None:
        self._supervisor = supervisor
        self._directory = directory
        self._own = CollectorRegistry(auto_describe=False)
        self._own.register(SupervisorGauges(supervisor))

    def render(self) -> bytes:
        multiprocess.forget_dead(self._directory, alive=self._supervisor.pids)
        return generate_latest(multiprocess.summed(self._directory)) + generate_latest(self._own)


class Exposure:
    """The metrics of one ``inferq worker``, as an async context: the children's directory (``child_env``)
    on entry, then ``serve``; the server stopped and a temporary directory removed on exit."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._directory: Path | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Exposure:
        if self._settings.worker_metrics_port:  # 0: off, and the children keep their counts in memory
            configured = os.environ.get(multiprocess.ENV)
            self._directory = self._stack.enter_context(multiprocess.metrics_directory(configured))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def child_env(self) -> dict[str, str]:
        """What puts the children in multiprocess mode (nothing when metrics are off)."""
        return multiprocess.child_environment(self._directory)

    async def serve(self, supervisor: Supervised) -> None:
        """Serve ``/metrics`` on ``INFERQ_HOST:INFERQ_WORKER_METRICS_PORT`` until the exposure is closed."""
        if self._directory is None:
            return
        render = SupervisorMetrics(supervisor, self._directory).render
        port = self._settings.worker_metrics_port
        await self._stack.enter_async_context(served(render, host=self._settings.host, port=port))
