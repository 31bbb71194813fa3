"""The workers' Prometheus metrics, recorded by an observer of every settled batch (``workers/observers.py``).

Per model version: results by lane and outcome, the queue wait of each request, and per ONNX Runtime run
its time and rows; rows of each job chunk; dead letters by partition and reason class. Under
``inferq worker`` each process writes them to the supervisor's multiprocess directory and the supervisor
serves the sum (``workers/supervisor_metrics.py``); docs/metrics.md lists them.

NOTE: cost on the hot path. In multiprocess mode a counter increment costs ~1.3 µs and a histogram
observation ~3.3 µs (mmap writes under a lock, measured here), against ~40 µs of worker time per message.
So a batch is summed first: one increment per (lane, outcome), one histogram bucket increment per bucket
touched (``observe_many``), and run-level values once per run, not once per request.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram

from inferq.streams.partition import Partition
from inferq.workers.publisher import Outcome

QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CHUNK_BUCKETS = (1, 16, 64, 256, 1024, 4096, 16384, 65536)
_VERSION = ["model", "version"]


class WorkerMetrics:
    """The instruments of one worker process; ``observe`` is its observer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.results = Counter(
            "inferq_worker_results_total",
            "Entries settled by the workers, by model, version, lane and outcome (succeeded, failed, expired, "
            "canceled, dead_lettered). Job chunks count here only when their result reaches the observer.",
            [*_VERSION, "lane", "outcome"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "inferq_worker_queue_wait_seconds",
            "Time from enqueue (the stream entry's id, Redis's clock) to a worker taking the request, per request.",
            [*_VERSION, "lane"],
            buckets=QUEUE_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "inferq_worker_inference_seconds",
            "Time of one ONNX Runtime run (a batch), per run.",
            _VERSION,
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "inferq_worker_batch_rows",
            "Rows in one ONNX Runtime run (the batch size), per run.",
            _VERSION,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.chunk_rows = Histogram(
            "inferq_worker_job_chunk_rows",
            "Rows of each job chunk settled (its outcome is stored in Postgres).",
            _VERSION,
            buckets=CHUNK_BUCKETS,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "inferq_worker_dead_letters_total",
            "Entries moved to a dead-letter stream, by partition (model@version) and reason "
            "(max_deliveries: crashed or timed out too often; undecodable: not a request; other).",
            ["partition", "reason"],
            registry=self.registry,
        )
        # NOTE: labelled children cached by label values: ``labels()`` takes a lock and builds a key.
        self._counters: dict[tuple[int | str, ...], Counter] = {}
        self._histograms: dict[tuple[int | str, ...], Histogram] = {}

    def observe(self, part: Partition, outcomes: Sequence[Outcome]) -> None:
        """Count one settled batch of ``part`` (the observer hook: cheap, never awaits)."""
        counts: dict[tuple[str, str], int] = {}
        waits: dict[str, list[float]] = {}
        runs: dict[tuple[int, float], None] = {}  # (rows, ms): the results of one run share both
        chunks: list[float] = []
        dead: dict[str, int] = {}
        for outcome in outcomes:
            if outcome.retry:  # left pending, settled (and counted) later
                continue
            lane = outcome.entry.lane
            if outcome.job is not None:
                chunks.append(max(1, outcome.rows))
            if outcome.dead_reason is not None:
                reason = reason_class(outcome.dead_reason)
                dead[reason] = dead.get(reason, 0) + 1
            result = outcome.result
            status = result.status if result is not None else "dead_lettered" if outcome.dead_reason else None
            if status is None:  # a job chunk whose outcome went to Postgres, or skipped (its job ended)
                continue
            counts[(lane, status)] = counts.get((lane, status), 0) + 1
            timings = result.timings if result is not None else None
            if timings is not None:
                waits.setdefault(lane, []).append(timings.queue_ms / 1000)
                if timings.batch_rows > 0:
                    runs[(timings.batch_rows, timings.inference_ms)] = None
        model, version = part.model, str(part.version)
        for (lane_name, outcome_name), n in counts.items():
            self._counter(self.results, model, version, lane_name, outcome_name).inc(n)
        for lane_name, seconds in waits.items():
            observe_many(self._histogram(self.queue_wait, model, version, lane_name), seconds)
        if runs:
            observe_many(self._histogram(self.batch_rows, model, version), [rows for rows, _ in runs])
            observe_many(self._histogram(self.inference, model, version), [ms / 1000 for _, ms in runs])
        if chunks:
            observe_many(self._histogram(self.chunk_rows, model, version), chunks)
        for reason, n in dead.items():
            self._counter(self.dead_letters, part.key, reason).inc(n)

    def _counter(self, metric: Counter, *labels: str) -> Counter:
        key: tuple[int | str, ...] = (id(metric), *labels)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = metric.labels(*labels)
        return child

    def _histogram(self, metric: Histogram, *labels: str) -> Histogram:
        key: tuple[int | str, ...] = (id(metric), *labels)
        child = self._histograms.get(key)
        if child is None:
            child = self._histograms[key] = metric.labels(*labels)
        return child


@functools.cache
def worker_metrics() -> WorkerMetrics:
    """This process's instruments, made on first use (a worker process has one pool; tests have many)."""
    return WorkerMetrics()


def reason_class(reason: str) -> str:
    """A dead-letter reason (free text, ``workers/consumer.py`` and ``reclaimer.py``) as a label value."""
    if reason.startswith("undecodable"):
        return "undecodable"
    if reason.startswith("delivered "):
        return "max_deliveries"
    return "other"


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for each of ``amounts``, writing each bucket touched and the sum once.

    NOTE: reaches into prometheus-client 0.26's ``Histogram`` (``_upper_bounds``, ``_buckets``, ``_sum``:
    non-cumulative bucket counts, as its ``observe`` writes them); falls back to ``observe`` when they are
    not there. tests/unit/test_worker_metrics.py compares both ways.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    touched: dict[int, int] = {}
    for amount in amounts:
        index = bisect.bisect_left(bounds, amount)  # the first bound >= amount (the last is +Inf)
        touched[index] = touched.get(index, 0) + 1
    total.inc(sum(amounts))
    for index, n in touched.items():
        buckets[index].inc(n)
