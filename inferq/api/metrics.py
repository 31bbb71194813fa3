"""Prometheus metrics of one API app: requests by route and status, predictions by outcome.

Each app gets its own registry (tests count exactly). With ``PROMETHEUS_MULTIPROC_DIR`` set before
prometheus-client is imported, values live in that directory and ``render`` sums every process's.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
        self.held = Gauge(
            "inferq_api_held_requests",
            "Callers currently held waiting for a result.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

        # NOTE: labelled children cached by label values: ``labels()`` takes a lock and builds a key.
        self._requests: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._predictions: dict[tuple[str, int, str], Counter] = {}

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

    def count_prediction(self, *, model: str, version: int, outcome: str) -> None:
        key = (model, version, outcome)
        child = self._predictions.get(key)
        if child is None:
            child = self._predictions[key] = self.predictions.labels(model, str(version), outcome)
        child.inc()

    def render(self) -> bytes:
        """The exposition text: every process's values in multiprocess mode, else this app's."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
