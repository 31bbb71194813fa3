"""``GET /v1/models/{model}/stats``: a model's logged traffic per hour and over the window."""

from __future__ import annotations

import datetime as dt

import msgspec


class Percentiles(msgspec.Struct, frozen=True, kw_only=True):
    """Milliseconds (``percentile_cont``: interpolated between the two nearest values)."""

    p50: float
    p95: float
    p99: float


class Latency(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where the time of the results that succeeded went: queued, in the model run, and both (the worker's
    view: HTTP not included). Absent when none succeeded."""

    queue_ms: Percentiles | None = None
    inference_ms: Percentiles | None = None
    total_ms: Percentiles | None = None


class TrafficStats(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Logged results of one hour (``hour``: its start, UTC) or of the whole window (no ``hour``).

    ``error_rate`` = results that did not succeed / results; ``classes``: predicted rows per class
    (classifiers). Counts are of the logged results: with sampling, of the sample.
    """

    hour: dt.datetime | None = None
    requests: int
    rows: int
    statuses: dict[str, int]
    errors: dict[str, int]  # error code → results
    error_rate: float
    latency: Latency
    classes: dict[str, int]


class ModelStats(msgspec.Struct, frozen=True, kw_only=True):
    """A model's logged traffic from ``since`` to ``until``; ``tenant`` null = every tenant's (admin)."""

    model: str
    version: int | None
    tenant: str | None
    since: dt.datetime
    until: dt.datetime
    totals: TrafficStats
    by_hour: tuple[TrafficStats, ...]
