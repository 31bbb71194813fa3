"""The Prometheus metrics of ``inferq tasks``: webhook attempts by outcome and how long they took.

One process (no multiprocess directory): ``render`` is its own registry, served on
``INFERQ_TASKS_METRICS_PORT`` (``cli/tasks.py``). A job's state is counted by the API from Postgres
(``inferq_jobs``), not here.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from inferq.webhooks.sender import AttemptOutcome

AttemptResult = Literal["delivered", "retrying", "gave_up", "disabled"]
ATTEMPT_RESULTS: tuple[AttemptResult, ...] = ("delivered", "retrying", "gave_up", "disabled")
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)


class TaskMetrics:
    """The task worker's instruments, on a registry of their own (tests count exactly)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.attempts = Counter(
            "inferq_webhook_attempts_total",
            "Webhook delivery attempts made, by outcome: delivered (2xx), retrying (failed, the next attempt is "
            "scheduled), gave_up (failed, attempts exhausted: the delivery is failed), disabled (410 Gone: the "
            "endpoint is disabled with its pending deliveries).",
            ["outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "inferq_webhook_attempt_duration_seconds",
            "Time of one webhook attempt, name resolution to the last byte of the answer (or the timeout).",
            buckets=ATTEMPT_BUCKETS,
            registry=self.registry,
        )
        # Every outcome from the start: a rate over a series that appears late misses its first increments.
        self._attempts = {result: self.attempts.labels(result) for result in ATTEMPT_RESULTS}

    def count_attempt(self, outcome: AttemptOutcome, *, retry_in_s: float | None) -> AttemptResult:
        """Count one attempt that was made (its HTTP request sent, or tried); its outcome class."""
        result = attempt_result(outcome, retry_in_s=retry_in_s)
        self._attempts[result].inc()
        self.duration.observe(outcome.duration_ms / 1000)
        return result

    def render(self) -> bytes:
        return generate_latest(self.registry)


def attempt_result(outcome: AttemptOutcome, *, retry_in_s: float | None) -> AttemptResult:
    """Which of the four an attempt came to (``retry_in_s``: the schedule's delay, None when it gave up)."""
    if outcome.ok:
        return "delivered"
    if outcome.gone:
        return "disabled"
    return "gave_up" if retry_in_s is None else "retrying"
