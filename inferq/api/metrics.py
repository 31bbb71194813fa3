"""Prometheus metrics of one API app: requests by route and status, predictions by outcome, the
state of every partition's streams, and batch jobs by status.

Each app gets its own registry (tests count exactly). With ``PROMETHEUS_MULTIPROC_DIR`` set before
prometheus-client is imported, values live in that directory and ``render`` sums every process's.
The stream gauges are not process state: they are a reading of Redis taken for each scrape
(``ModelDirectory.backlog``), rendered from a registry of their own, so a partition that went away
leaves no stale series behind. Jobs by status are read the same way, from Postgres (``JobCounts``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from inferq.api.job_counts import FINISHED_WINDOW, JobCounts
from inferq.contracts.jobs import JOB_STATUSES, OPEN_STATUSES
from inferq.streams.backlog import Backlog

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The API's instruments, registered on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "inferq_api_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "inferq_api_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "inferq_api_predictions_total",
            "Prediction requests by model, resolved version and outcome "
            "(succeeded, failed, expired, dead_lettered, accepted, timed_out, invalid_input, overloaded, unavailable).",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        self.prediction_latency = Histogram(
            "inferq_api_prediction_duration_seconds",
            "End to end: from a prediction's arrival to its result, for callers answered with the result (200), "
            "by model and resolved version (queue wait + inference + the hops between).",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.held = Gauge(
            "inferq_api_held_requests",
            "Callers currently held waiting for a result.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.shadow_requests = Counter(
            "inferq_shadow_requests_total",
            "Mirrored requests (shadow traffic) by model, shadow version and outcome: sent (enqueued), or dropped "
            "(too many mirrors in flight, the shadow partition over its admission limit, or Redis unavailable).",
            ["model", "version", "outcome"],
            registry=self.registry,
        )

        self.fallbacks = Counter(
            "inferq_fallbacks_total",
            "Predictions to an alias with fallback on whose chosen version could not serve (reason not_ready: no "
            "live consumer; load_failed: its model failed to load), by model, chosen and serving version.",
            ["model", "from_version", "to_version", "reason"],
            registry=self.registry,
        )
        self.result_cache = Counter(
            "inferq_result_cache_requests_total",
            "Predictions looked up in the result cache (versions with result_cache_ttl_s only), by model, version "
            "and outcome: hit (answered from Redis, no worker) or miss (enqueued). Hit ratio = hit / (hit + miss).",
            ["model", "version", "outcome"],
            registry=self.registry,
        )

        self.jobs: JobCounts | None = None  # set by the app's runtime while it is open (api/runtime.py)
        # NOTE: labelled children cached by label values: ``labels()`` takes a lock and builds a key.
        self._requests: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._predictions: dict[tuple[str, int, str], Counter] = {}
        self._latencies: dict[tuple[str, int], Histogram] = {}
        self._cache_lookups: dict[tuple[str, int, bool], Counter] = {}

    def count_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._requests.get(key)
        if children is None:
            children = self._requests[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_prediction(self, *, model: str, version: int, seconds: float) -> None:
        key = (model, version)
        child = self._latencies.get(key)
        if child is None:
            child = self._latencies[key] = self.prediction_latency.labels(model, str(version))
        child.observe(seconds)

    def count_prediction(self, *, model: str, version: int, outcome: str) -> None:
        key = (model, version, outcome)
        child = self._predictions.get(key)
        if child is None:
            child = self._predictions[key] = self.predictions.labels(model, str(version), outcome)
        child.inc()

    def count_shadow(self, *, model: str, version: int, outcome: str) -> None:
        self.shadow_requests.labels(model, str(version), outcome).inc()

    def count_fallback(self, *, model: str, from_version: int, to_version: int, reason: str) -> None:
        self.fallbacks.labels(model, str(from_version), str(to_version), reason).inc()

    def count_cache(self, *, model: str, version: int, hit: bool) -> None:
        key = (model, version, hit)
        child = self._cache_lookups.get(key)
        if child is None:
            child = self._cache_lookups[key] = self.result_cache.labels(model, str(version), "hit" if hit else "miss")
        child.inc()

    async def read_jobs(self) -> Mapping[str, int] | None:
        """Jobs by status (cached), or None when there is no reader or Postgres could not say."""
        return None if self.jobs is None else await self.jobs.read()

    def render(self, backlog: Backlog | None = None, jobs: Mapping[str, int] | None = None) -> bytes:
        """The exposition text: every process's values in multiprocess mode, else this app's; then the
        stream gauges of ``backlog`` (none when Redis could not be read) and the job counts of ``jobs``
        (none when Postgres could not be read)."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        registry = self.registry
        if directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
        if backlog is not None:
            text += generate_latest(_families(StreamGauges(backlog)))
        if jobs is not None:
            text += generate_latest(_families(JobGauges(jobs)))
        return text


class StreamGauges(Collector):
    """The stream gauges of one reading of Redis, as metric families built at collection.

    NOTE: not ``Gauge`` objects: with ``PROMETHEUS_MULTIPROC_DIR`` set, every ``Gauge`` writes its value
    to that directory, where the next scrape would find it again (twice, then forever under a dead pid).
    """

    def __init__(self, backlog: Backlog) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lanes = ["partition", "lane"]
        waiting = GaugeMetricFamily(
            "inferq_stream_backlog",
            "Entries not yet delivered to any worker, by partition (model@version) and lane.",
            labels=lanes,
        )
        pending = GaugeMetricFamily(
            "inferq_stream_pending",
            "Entries delivered to a worker, not yet acknowledged (running, or held by a dead worker until reclaimed).",
            labels=lanes,
        )
        oldest = GaugeMetricFamily(
            "inferq_stream_oldest_age_seconds",
            "Age of the oldest unfinished entry (0 when the lane is empty).",
            labels=lanes,
        )
        consumers = GaugeMetricFamily(
            "inferq_stream_consumers",
            "Workers consuming the partition now (heard from within 10 s). Backlog with 0 here = no capacity.",
            labels=["partition"],
        )
        dead = GaugeMetricFamily(
            "inferq_stream_dead_letters", "Entries in the partition's dead-letter stream.", labels=["partition"]
        )
        for part in self._backlog.partitions:
            consumers.add_metric([part.partition], part.consumers)
            dead.add_metric([part.partition], part.dead_letters)
            for lane in part.lanes:
                waiting.add_metric([part.partition, lane.lane], lane.backlog)
                pending.add_metric([part.partition, lane.lane], lane.pending)
                oldest.add_metric([part.partition, lane.lane], lane.oldest_age_s)
        yield from (waiting, pending, oldest, consumers, dead)


class JobGauges(Collector):
    """``inferq_jobs``: one reading of Postgres, as a metric family (not a ``Gauge``: see ``StreamGauges``)."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "inferq_jobs",
            f"Batch jobs by status: {' and '.join(OPEN_STATUSES)} now; the others only those that finished in the "
            f"last {FINISHED_WINDOW} (the table keeps finished jobs for INFERQ_JOB_RETENTION_S; counting them all "
            "would scan it on every scrape).",
            labels=["status"],
        )
        for status in JOB_STATUSES:  # every status, 0 included: an absent series is not a zero
            family.add_metric([status], self._counts.get(status, 0))
        yield family


def _families(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
