"""A model's stats from the prediction log: two grouped scans of one snapshot, per hour and over the window.

The first gives counts, rows and latency percentiles; the second counts statuses, error codes and
predicted classes (one lateral row per kind, plus one per class of a multi-row result). Both group by
``GROUPING SETS ((hour), ())``, so the window's totals (its own percentiles, not an average of the
hours') come from the same scan. Both read the ``(model, created_at)`` index.

Percentiles are of the results that succeeded: an expired or invalid request never ran, and its zero
inference time would only pull them down (its count is in ``statuses``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.stats import Latency, ModelStats, Percentiles, TrafficStats
from inferq.store.sessions import transaction

QUERY_TIMEOUT_MS = 10_000  # one caller's window must not hold Postgres for long: past this, a 503

_HOUR = "date_trunc('hour', p.created_at, 'UTC')"
_PERCENTILES = "percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {}) FILTER (WHERE succeeded)"
_TIMINGS = f"""
SELECT GROUPING(hour) = 1 AS total, hour, count(*) AS requests, coalesce(sum(row_count), 0) AS rows,
       {_PERCENTILES.format("queue_ms")} AS queue_ms,
       {_PERCENTILES.format("inference_ms")} AS inference_ms,
       {_PERCENTILES.format("queue_ms::float8 + inference_ms")} AS total_ms
FROM (
    SELECT {{hour}} AS hour, p.row_count, p.queue_ms, p.inference_ms, p.status = 'succeeded' AS succeeded
    FROM prediction_log p WHERE {{where}}
) s
GROUP BY GROUPING SETS ((hour), ())
"""
_COUNTS = """
SELECT GROUPING(hour) = 1 AS total, hour, kind, key, sum(n)::bigint AS n
FROM (
    SELECT {hour} AS hour, c.kind, c.key, c.n
    FROM prediction_log p CROSS JOIN LATERAL (
        VALUES ('status', p.status, 1), ('error', p.error_code, 1), ('class', p.predicted, 1)
        UNION ALL SELECT 'class', e.key, e.value::int FROM jsonb_each_text(p.predicted_counts) AS e
    ) AS c (kind, key, n)
    WHERE {where} AND c.key IS NOT NULL
) s
GROUP BY GROUPING SETS ((hour, kind, key), (kind, key))
"""


class PredictionStats:
    """Reads ``prediction_log`` for ``GET /v1/models/{model}/stats``."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def model_stats(
        self, model: str, *, hours: int, now: dt.datetime, version: int | None = None, tenant: str | None = None
    ) -> ModelStats:
        """The ``hours`` hours up to ``now``'s (the current one included), of one tenant or (None) all."""
        until = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        since = until - dt.timedelta(hours=hours)
        where = ["p.model = :model", "p.created_at >= :since", "p.created_at < :until"]
        params: dict[str, Any] = {"model": model, "since": since, "until": until}
        if version is not None:
            where.append("p.version = :version")
            params["version"] = version
        if tenant is not None:
            where.append("p.tenant = :tenant")
            params["tenant"] = tenant
        clause = " AND ".join(where)
        async with transaction(self._sessionmaker) as session:
            # one snapshot for both scans: the counts and the percentiles describe the same rows
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            await session.execute(text(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}"))
            timings = (await session.execute(text(_TIMINGS.format(hour=_HOUR, where=clause)), params)).all()
            counts = (await session.execute(text(_COUNTS.format(hour=_HOUR, where=clause)), params)).all()
        buckets = _merge(timings, counts)
        totals = buckets.pop(None)
        return ModelStats(
            model=model,
            version=version,
            tenant=tenant,
            since=since,
            until=until,
            totals=totals,
            by_hour=tuple(buckets[hour] for hour in sorted(h for h in buckets if h is not None)),
        )


def _merge(timings: Sequence[Any], counts: Sequence[Any]) -> dict[dt.datetime | None, TrafficStats]:
    """The buckets of both scans by hour (``None``: the window), built once everything is read."""
    tallies: defaultdict[tuple[dt.datetime | None, str], dict[str, int]] = defaultdict(dict)
    for row in counts:
        tallies[(None if row.total else row.hour, row.kind)][row.key] = int(row.n)
    buckets: dict[dt.datetime | None, TrafficStats] = {}
    for row in timings:
        hour = None if row.total else row.hour
        statuses = tallies[(hour, "status")]
        failed = row.requests - statuses.get("succeeded", 0)
        buckets[hour] = TrafficStats(
            hour=hour,
            requests=row.requests,
            rows=int(row.rows),
            statuses=statuses,
            errors=tallies[(hour, "error")],
            error_rate=failed / row.requests if row.requests else 0.0,
            latency=Latency(
                queue_ms=_percentiles(row.queue_ms),
                inference_ms=_percentiles(row.inference_ms),
                total_ms=_percentiles(row.total_ms),
            ),
            classes=tallies[(hour, "class")],
        )
    return buckets


def _percentiles(values: Sequence[float] | None) -> Percentiles | None:
    if values is None:  # no timed result: percentile_cont over nothing is NULL
        return None
    p50, p95, p99 = (round(float(v), 3) for v in values)
    return Percentiles(p50=p50, p95=p95, p99=p99)
